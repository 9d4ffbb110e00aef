# rstunnel - build, test and install helpers. Everything real is in cargo and scripts/.

CARGO    ?= cargo
PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR   ?= $(PREFIX)/bin
# Config files go to /etc/stunnel (where stunnel users keep theirs), not under PREFIX.
CONFDIR  ?= /etc/stunnel
INSTALL  ?= install

RELEASE_BIN := target/release/rstunnel
SAMPLE_CONFS := conf/stunnel.conf conf/syslog-server.conf conf/syslog-client.conf

.PHONY: all build test test-unit test-scripts demo bench fmt fmt-check clippy install uninstall clean deps help

all: build

help:
	@echo "make build      cargo build --release"
	@echo "make test       deps check/install, cargo test --release, scripts/e2e-syslog.sh"
	@echo "make demo       syslog over TLS on this machine (scripts/demo.sh)"
	@echo "make bench      rstunnel vs stunnel4 (scripts/bench.sh, writes BENCHMARKS.md)"
	@echo "make fmt | fmt-check | clippy"
	@echo "make install | uninstall   PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) CONFDIR=$(CONFDIR)"
	@echo "make clean"

build:
	$(CARGO) build --release

deps:
	scripts/deps.sh

# Sequential on purpose (also under make -j): deps, unit/integration, scripts.
test:
	scripts/deps.sh
	$(CARGO) test --release
	$(CARGO) build --release
	RSTUNNEL=$(RELEASE_BIN) scripts/e2e-syslog.sh

test-unit:
	$(CARGO) test --release

test-scripts: build
	RSTUNNEL=$(RELEASE_BIN) scripts/e2e-syslog.sh

demo: build
	RSTUNNEL=$(RELEASE_BIN) scripts/demo.sh

# bench.sh builds the release binaries itself.
bench:
	scripts/bench.sh

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# Installs the binary and the sample configs. Existing config files are never
# overwritten: an edited /etc/stunnel/stunnel.conf survives `make install`.
install: build
	$(INSTALL) -d -m 0755 "$(DESTDIR)$(BINDIR)"
	$(INSTALL) -m 0755 $(RELEASE_BIN) "$(DESTDIR)$(BINDIR)/rstunnel"
	$(INSTALL) -d -m 0755 "$(DESTDIR)$(CONFDIR)"
	@for f in $(SAMPLE_CONFS); do \
		dest="$(DESTDIR)$(CONFDIR)/$$(basename $$f)"; \
		if [ -e "$$dest" ]; then \
			echo "keeping existing $$dest"; \
		else \
			echo "$(INSTALL) -m 0644 $$f $$dest"; \
			$(INSTALL) -m 0644 "$$f" "$$dest" || exit 1; \
		fi; \
	done

# Removes the binary, and the sample configs only if they are unchanged
# (the directory stays: other packages, stunnel4 among them, use it too).
uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/rstunnel"
	@for f in $(SAMPLE_CONFS); do \
		dest="$(DESTDIR)$(CONFDIR)/$$(basename $$f)"; \
		if [ -e "$$dest" ]; then \
			if cmp -s "$$f" "$$dest"; then \
				echo "rm -f $$dest"; rm -f "$$dest"; \
			else \
				echo "keeping modified $$dest"; \
			fi; \
		fi; \
	done

clean:
	$(CARGO) clean
