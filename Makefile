# quailmail — the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Debian peers the tests compare with (installed only when running as root).
# g++, binutils (objcopy) and libssl-dev build tests/peers' libdkim helpers and
# bench/opendkim_bench.c.
DEBIAN_PEERS := libmail-dkim-perl libnet-dns-perl opendkim opendkim-tools libdkim-dev ucspi-tcp-ipv6 \
	libopendkim-dev gcc g++ binutils libc6-dev libssl-dev

.PHONY: install test lint typecheck pytest peers run bench clean

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
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		fi; \
	else echo "not root: Debian peers not installed; tests that need them are skipped"; fi

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q

test: install peers lint typecheck pytest

run:
	@echo "The SMTP receiver arrives with issue 4; until then 'make run' has nothing to serve." >&2
	@exit 1

bench: install peers
	$(BIN)/python bench/dkim.py
	$(BIN)/python bench/spf.py
	$(BIN)/python bench/queue_put.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
