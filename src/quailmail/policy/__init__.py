"""Inbound policy: checks that turn evidence into a verdict, per stage of the
SMTP conversation (ARCHITECTURE.md, policy/).

The receiver (server/connection.py) calls the stages of `pipeline.py` in
order; each check is a function of `base.Client` (the connection: address,
verified name, tcprules variables, HELO, TLS, AUTH) and what the stage has
(the sender, a recipient, the message).  A check answers `None` (go on) or
a `Reply` (refuse now, 4xx or 5xx, with the reason logged once).  DATA
checks may also add header fields and Authentication-Results entries to the
`base.Message`.
"""
