"""The rules' variables as an authenticated session sees them.

John Simpson's combined patch (the seeds' qmail, 001_*) gives tcprules two
prefixes: `AUTH_SET_NAME="v"` sets NAME to v once the client has
authenticated, `AUTH_UNSET_NAME=""` removes NAME then (qmail-smtpd's
`auth_fixenv`).  The seeds' rule

    :allow,DKVERIFY="",AUTH_UNSET_DKVERIFY=""

verifies strangers' mail but not that of the site's own authenticated users.
The prefixed variables themselves are never seen by the checks.
"""

from __future__ import annotations

from collections.abc import Mapping

from quailmail.policy.base import Client

SET = "AUTH_SET_"
UNSET = "AUTH_UNSET_"


def effective_env(env: Mapping[str, str], authenticated: bool) -> dict[str, str]:
    """`env` without the AUTH_SET_/AUTH_UNSET_ variables, and, for an
    authenticated session, with what they ask for done."""
    out = {k: v for k, v in env.items() if not k.startswith((SET, UNSET))}
    if authenticated:
        for key in env:
            if key.startswith(UNSET):
                out.pop(key[len(UNSET) :], None)
        for key, value in env.items():
            if key.startswith(SET) and len(key) > len(SET):
                out[key[len(SET) :]] = value
    return out


def session_env(client: Client) -> dict[str, str]:
    """The client's variables now (AUTH may have happened since the rules).
    Without AUTH_ variables, the rules' own dict (read it, do not change it)."""
    if client.auth_vars is None:
        client.auth_vars = any(key.startswith((SET, UNSET)) for key in client.env)
    if not client.auth_vars:
        return client.env
    return effective_env(client.env, client.auth_user is not None)
