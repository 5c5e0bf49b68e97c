#!/bin/sh
# SMTP accept rate with the inbound policy on (DNSBL, greylisting passed,
# SPF, DKIM verification, DMARC, Authentication-Results; DNS through a local
# unbound), beside quailmail without policy and Postfix with an OpenDKIM
# verifying milter.  See bench/smtp_policy.py.
#
#   bench/smtp_policy.sh [--messages 3000] [--concurrency 50] [--size 4096]
#       [--rounds 3] [--json FILE]
#
# Needs root (Postfix's master), the venv (make install), Postfix's
# smtp-source, opendkim and unbound (make peers).  The Python side stops
# every process it started, on success, failure or signal.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-"$here/../.venv/bin/python"}
if [ ! -x "$python" ]; then
	echo "smtp_policy.sh: no $python (run: make install)" >&2
	exit 1
fi
PATH="$PATH:/usr/sbin:/sbin"
export PATH
exec "$python" "$here/smtp_policy.py" "$@"
