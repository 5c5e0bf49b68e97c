"""Delivery: local (Maildir, .qmail) and remote (SMTP).

Local delivery is qmail-local(8): Maildir, mbox, ``.qmail`` lines (forward,
Maildir, mbox, ``|program``) and the built-in Junk folder.  The scheduler
calls `local.deliver_local`; the pieces are usable alone:
`maildir.deliver_maildir`, `dotqmail.parse_dotqmail` / `find_dotqmail`,
`junk.is_spam` / `junk.ensure_junk_folder`.  Signing at delivery is
`dksign.sign_for_delivery`.
"""
