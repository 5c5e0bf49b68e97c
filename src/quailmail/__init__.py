"""quailmail: a qmail-style mail server with sender authentication built in."""

__version__ = "0.1.0"
