"""When to try a temporary failure again: qmail-send's `nextretry`.

    next = birth + (sqrt(age) + chanskip)^2

where `age` is how long ago the message arrived and `chanskip` is 10 for
local deliveries and 20 for remote ones (qmail-send.c): retries start a
few minutes apart and spread out as the message ages, so a destination
that is down for days costs a few dozen attempts, not thousands.  After
`queuelifetime` (default 7 days, qmail's) the message bounces.
"""

from __future__ import annotations

import math

LOCAL_SKIP = 10
REMOTE_SKIP = 20
QUEUELIFETIME = 7 * 24 * 3600


def next_retry(birth: float, now: float, *, remote: bool) -> float:
    """The moment of the next attempt for a message born at `birth`."""
    skip = REMOTE_SKIP if remote else LOCAL_SKIP
    age = max(0.0, now - birth)
    n = math.isqrt(int(age)) + skip
    return birth + n * n


def expired(birth: float, now: float, lifetime: float = QUEUELIFETIME) -> bool:
    """Past `queuelifetime`: the next temporary failure becomes a bounce."""
    return now - birth > lifetime
