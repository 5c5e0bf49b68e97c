# quailmail — the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Debian peers the tests compare with (installed only when running as root).
# g++, binutils (objcopy) and libssl-dev build tests/peers' libdkim helpers and
# bench/opendkim_bench.c.  dovecot-imapd reads the Junk folder in
# tests/test_junk_imap.py (each test starts its own instance on a free loopback
# port with its own config; the package's system service is not used).
# Postfix is a peer of the end-to-end tests (tests/peers/postfix.py) and the
# anchor of bench/smtp_accept.sh, bench/relay.sh and bench/local_delivery.py
# (with its smtp-source and smtp-sink); it is preseeded as "No configuration" so the install asks
# nothing, writes no /etc/postfix/main.cf and starts no system instance on
# port 25: tests and benchmarks run private instances on free loopback ports.
# ucspi-tcp-ipv6's rblsmtpd is the DNS blocklist peer; redis-server holds the
# shared greylist of tests/test_policy_greylist.py (one per test, loopback,
# nothing saved; the package's system service is not used).
# mailfront (Bruce Guenter's SMTP front end) runs $QMAILQUEUE as qmail-smtpd
# runs qmail-queue: the independent caller of quail-qmail-queue and
# quail-dkverify in tests/test_qmailqueue_peer.py (no service is started).
# spamd (with spamassassin's rules in /usr/share/spamassassin and sa-learn) is
# the scanner of tests/test_spamassassin.py and tests/test_learn.py: each test
# module starts its own on a free loopback port (tests/spamdfixtures.py).
DEBIAN_PEERS := libmail-dkim-perl libnet-dns-perl opendkim opendkim-tools libdkim-dev ucspi-tcp-ipv6 \
	libopendkim-dev gcc g++ binutils libc6-dev libssl-dev maildrop dovecot-imapd postfix redis-server \
	spamassassin spamd mailfront unbound

.PHONY: install test lint typecheck pytest peers bench-peers run bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

peers:
	@if [ "$$(id -u)" = 0 ]; then \
		missing=""; for p in $(DEBIAN_PEERS); do \
			dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "installing Debian peers:$$missing"; \
			echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		fi; \
	else echo "not root: Debian peers not installed; tests that need them are skipped"; fi

# Postfix was once a benchmark-only peer; the old name still works.
bench-peers: peers

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q

test: install peers lint typecheck pytest

# The README's first command: a root in ./var (made on first use), served on
# 127.0.0.1 and ::1: SMTP 2525, implicit TLS 2465, submission 2587.
run: install
	@test -f var/control/me || $(BIN)/quail init var --hostname localhost
	@echo "quailmail serves ./var: SMTP 2525, SMTPS 2465, submission 2587 on 127.0.0.1 and ::1."
	@echo "Send a first message:   swaks --server 127.0.0.1 --port 2525 --to postmaster@localhost"
	@echo "It is delivered to:     var/alias/Maildir/new/   (waiting mail: $(BIN)/quail queue list --root var)"
	@echo "Stop with Ctrl-C."
	$(BIN)/quail serve --root var

bench: install peers
	$(BIN)/python bench/dkim.py
	$(BIN)/python bench/spf.py
	$(BIN)/python bench/queue_put.py
	@if [ "$$(id -u)" = 0 ]; then bench/smtp_accept.sh && bench/smtp_policy.sh && bench/relay.sh && \
		$(BIN)/python bench/local_delivery.py; \
	else echo "not root: bench/smtp_accept.sh, smtp_policy.sh, relay.sh and local_delivery.py skipped" \
		"(Postfix's master needs root)"; fi

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
