#!/bin/sh
# Postfix relaying on loopback (smtp-source -> Postfix -> smtp-sink, 50
# connections), with and without an OpenDKIM signing milter: the anchor for
# bench/relay.sh.  See bench/postfix_relay_anchor.py.
#
#   bench/postfix_relay_anchor.sh [--messages 5000] [--concurrency 50] [--size 4096]
#       [--rounds 3] [--no-milter] [--json FILE]
#
# Needs root (Postfix's master), the venv (make install), Postfix's
# smtp-source and smtp-sink, and opendkim (make peers).  The Python side
# stops every process it started, on success, failure or signal.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-"$here/../.venv/bin/python"}
if [ ! -x "$python" ]; then
	echo "postfix_relay_anchor.sh: no $python (run: make install)" >&2
	exit 1
fi
PATH="$PATH:/usr/sbin:/sbin"
export PATH
exec "$python" "$here/postfix_relay_anchor.py" "$@"
