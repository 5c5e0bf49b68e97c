"""control/smtpgreeting, as qmail-smtpd reads it (qmail-control(5)).

qmail-smtpd's smtp_greet writes the file's first line (default control/me)
after the code of the 220, of HELO's and EHLO's 250 and of the 221: a
migrated /var/qmail/control keeps its banner.  Read per connection.
"""

from __future__ import annotations

import smtplib

from serverfixtures import Running


def test_smtpgreeting_names_us_as_qmail_smtpd_does(server: Running) -> None:
    (server.root / "control" / "smtpgreeting").write_text("mail.example.org Welcome\n")
    client = smtplib.SMTP(timeout=10)
    try:
        code, banner = client.connect("127.0.0.1", server.smtp)
        assert (code, banner) == (220, b"mail.example.org Welcome ESMTP")
        client.ehlo("client.test")
        assert (client.ehlo_resp or b"").split(b"\n")[0] == b"mail.example.org Welcome"
        assert client.helo("client.test") == (250, b"mail.example.org Welcome")
        code, bye = client.docmd("QUIT")
        assert code == 221 and bye.endswith(b"mail.example.org Welcome closing connection")
    finally:
        client.close()


def test_without_smtpgreeting_control_me_is_used(server: Running) -> None:
    client = smtplib.SMTP(timeout=10)
    code, banner = client.connect("127.0.0.1", server.smtp)
    assert code == 220 and banner.startswith(b"mx.test ESMTP")
    client.ehlo("client.test")
    assert (client.ehlo_resp or b"").split(b"\n")[0] == b"mx.test"
    client.quit()
