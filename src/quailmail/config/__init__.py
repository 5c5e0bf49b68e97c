"""The qmail control directory of a root, its users, and tcprules."""
