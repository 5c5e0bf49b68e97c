"""Delivery: local (Maildir, .qmail) and remote (SMTP)."""
