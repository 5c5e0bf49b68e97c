"""Delivery: local (Maildir, .qmail) and remote (SMTP).

Local delivery is qmail-local(8): Maildir, mbox, ``.qmail`` lines (forward,
Maildir, mbox, ``|program``) and the built-in Junk folder.  The scheduler
calls `local.deliver_local`; the pieces are usable alone:
`maildir.deliver_maildir`, `dotqmail.parse_dotqmail` / `find_dotqmail`,
`junk.is_spam` / `junk.ensure_junk_folder`.  Signing at remote delivery is
`signconf.sign_outgoing(data, control_dir)`: `control/dkim/signconf.xml`
(`signconf`) and `control/dksign` (`dksign.sign_for_delivery`) together.
"""
