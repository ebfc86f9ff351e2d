# rund developer entry points. A newcomer needs two: `make demo` and `make test` (see README.md).
# Everything installs idempotently and stays quiet when already done.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# System packages rund needs at run time and for its tests (Debian 12); gcc-12, make, binutils: the guest build
# compiles the 9p modules the cloud kernel lacks (guest/source_modules.py).
APT_PACKAGES := qemu-system-x86 containerd runc busybox-static erofs-utils cpio iproute2 python3-venv containernetworking-plugins gcc-12 make binutils
PIP_STAMP := $(VENV)/.pip-$(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-16)
BIN_LINKS := containerd-shim-rund-v2 rund

.PHONY: help install apt-packages python-packages bin-links guest-image demo test proto

help:
	@echo "make demo   install what is missing, then run a container through rund"
	@echo "make test   install what is missing, then run the whole test suite"
	@echo "make install | proto (regenerate proto/gen) | guest-image"

install: apt-packages python-packages bin-links guest-image

apt-packages:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

python-packages: $(PIP_STAMP)
	@:

$(PIP_STAMP): pyproject.toml
	@echo "installing Python packages into $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install -q -e '.[test]' >>$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@rm -f $(VENV)/.pip-* && touch $@

# containerd finds shims on its PATH; point /usr/local/bin at this checkout's entry points. The shim's is our own
# launcher (rund/shim/launcher.py: Python without site for the `start` of every task), written over pip's script.
bin-links: python-packages
	@$(PY) -m rund.shim.launcher $(VENV)/bin/containerd-shim-rund-v2
	@for b in $(BIN_LINKS); do \
	    [ "$$(readlink /usr/local/bin/$$b)" = "$(CURDIR)/$(VENV)/bin/$$b" ] || ln -sfn $(CURDIR)/$(VENV)/bin/$$b /usr/local/bin/$$b; \
	done

guest-image: python-packages
	@$(PY) -m guest.build

proto: python-packages
	$(PY) -m proto.generate

demo: install
	@$(PY) -m hack.demo

test: install
	$(PY) -m pytest
