#!/bin/sh
# Relaying on loopback (smtp-source -> server -> smtp-sink, 50 connections),
# quailmail beside Postfix, with and without DKIM signing (Postfix with an
# OpenDKIM milter).  See bench/relay.py.
#
#   bench/relay.sh [--messages 5000] [--concurrency 50] [--size 4096]
#       [--rounds 3] [--no-dkim] [--json FILE]
#
# Needs root (Postfix's master), the venv (make install), Postfix's
# smtp-source and smtp-sink, and opendkim (make peers).  The Python side
# stops every process it started, on success, failure or signal.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-"$here/../.venv/bin/python"}
if [ ! -x "$python" ]; then
	echo "relay.sh: no $python (run: make install)" >&2
	exit 1
fi
PATH="$PATH:/usr/sbin:/sbin"
export PATH
exec "$python" "$here/relay.py" "$@"
