"""Shared pytest setup.

Keep this file small: each family of fixtures lives in its own module and is
loaded here as a plugin, so a test module's fixtures are easy to find.
"""

pytest_plugins = [
    "dnsfixtures",
    "serverfixtures",
    "postfixfixtures",
    "spamdfixtures",
    "systemusers",
]
