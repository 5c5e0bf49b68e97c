"""The qmail control directory and tcprules (text rules and the cdb they compile to)."""
