"""Local delivery, as qmail-local(8) does it: Maildir, mbox, ``.qmail`` lines
(forward, Maildir, mbox, ``|program``) and the built-in Junk folder.

The scheduler calls `deliver_local`; the pieces are usable alone:
`maildir.deliver_maildir`, `dotqmail.parse_dotqmail` / `find_dotqmail`,
`junk.is_spam` / `junk.ensure_junk_folder`.
"""
