#!/bin/sh
# SMTP accept rate, quailmail beside Postfix (smtp-source on loopback), and
# quailmail's memory per idle connection.  See bench/smtp_accept.py.
#
#   bench/smtp_accept.sh [--seconds 3.5] [--rounds 2] [--idle 1000] [--json FILE]
#
# Needs root (Postfix's master), the venv (make install) and Postfix's
# smtp-source (make bench-peers).  The Python side stops every server it
# started, on success, failure or signal.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-"$here/../.venv/bin/python"}
if [ ! -x "$python" ]; then
	echo "smtp_accept.sh: no $python (run: make install)" >&2
	exit 1
fi
PATH="$PATH:/usr/sbin:/sbin"
export PATH
exec "$python" "$here/smtp_accept.py" "$@"
