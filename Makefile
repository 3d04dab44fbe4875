# loxgw: `make demo` runs the whole system in a namespace lab; `make test` runs every test.
# Both install what they need first (Debian packages as root, then a virtualenv); both are idempotent.

SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
BIN := $(VENV)/bin
APT_PACKAGES := python3 python3-venv python3-dev gcc make libnetfilter-queue-dev libnfnetlink-dev \
	procps nftables iptables iproute2 iputils-ping conntrack dnsmasq-base miniupnpd-nftables miniupnpc \
	tcpdump shellcheck chromium nodejs

.PHONY: all setup system-packages venv lint typecheck unit lab test demo render clean

all: test

setup: system-packages venv

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "loxgw: missing Debian packages: $$missing"; \
			echo "loxgw: run as root (or install them with apt-get) and try again"; exit 1; \
		fi; \
		echo "loxgw: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip >/dev/null
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

lint: setup
	$(BIN)/ruff check loxgw tests bench

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q tests/unit

lab: setup
	$(BIN)/pytest -q tests/lab

test: setup
	$(BIN)/ruff check loxgw tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -rs tests

demo: setup
	$(BIN)/python -m tests.lab.demo

render: setup
	$(BIN)/loxgw -c etc/loxgw.config render

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
