# rstunnel - build, test, install and package helpers. Everything real is in cargo and scripts/.

CARGO    ?= cargo
INSTALL  ?= install

# --- Installation directories ------------------------------------------------
#
#   make install [PREFIX=/usr/local] [DESTDIR=] [sysconfdir=/etc] [LAYOUT=debian|redhat]
#
# PREFIX holds the program, its man page and its documentation. The
# configuration goes to $(sysconfdir)/stunnel, where stunnel users keep theirs,
# whatever the PREFIX. DESTDIR is prepended to every path (staging for packages);
# the paths written into the installed files never contain it.
#
# LAYOUT follows the distribution: "debian" if /etc/debian_version exists,
# "redhat" if /etc/redhat-release exists, else "generic". The differences:
#
#                      debian                          redhat
#   systemd units      /lib/systemd/system             /usr/lib/systemd/system
#                      (with PREFIX=/usr; otherwise both use
#                       $(PREFIX)/lib/systemd/system, which systemd also reads)
#   license texts      $(PREFIX)/share/doc/rstunnel    $(PREFIX)/share/licenses/rstunnel
#
# and the same for both:
#   program            $(PREFIX)/bin/rstunnel
#   man page           $(PREFIX)/share/man/man8/rstunnel.8.gz
#   README             $(PREFIX)/share/doc/rstunnel
#   rsyslog examples   $(PREFIX)/share/doc/rstunnel/examples/rsyslog/*.conf
#   Prometheus alerts  $(PREFIX)/share/doc/rstunnel/examples/prometheus/rstunnel-alerts.yml
#   sample configs     $(sysconfdir)/stunnel/{stunnel,syslog-server,syslog-client}.conf
#   logrotate          $(sysconfdir)/logrotate.d/rstunnel
#
# "generic" is the redhat layout with the license texts in the doc directory.
# Each directory can also be set on its own (BINDIR, MANDIR, DOCDIR, LICENSEDIR,
# UNITDIR, CONFDIR, LOGROTATEDIR). Run `make uninstall` with the same settings.
#
# `make install` builds first (cargo build --release); NOBUILD=1 skips that and
# installs the binary that is there (what `make deb`/`make rpm` do inside).
PREFIX     ?= /usr/local
DESTDIR    ?=
sysconfdir ?= /etc

ifeq ($(origin LAYOUT),undefined)
LAYOUT := $(shell if [ -e /etc/debian_version ]; then echo debian; \
                  elif [ -e /etc/redhat-release ]; then echo redhat; \
                  else echo generic; fi)
endif

BINDIR       ?= $(PREFIX)/bin
MANDIR       ?= $(PREFIX)/share/man
DOCDIR       ?= $(PREFIX)/share/doc/rstunnel
CONFDIR      ?= $(sysconfdir)/stunnel
LOGROTATEDIR ?= $(sysconfdir)/logrotate.d

ifeq ($(LAYOUT),debian)
UNITDIR    ?= $(if $(filter /usr /usr/,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
LICENSEDIR ?= $(DOCDIR)
else ifeq ($(LAYOUT),redhat)
UNITDIR    ?= $(PREFIX)/lib/systemd/system
LICENSEDIR ?= $(PREFIX)/share/licenses/rstunnel
else
UNITDIR    ?= $(PREFIX)/lib/systemd/system
LICENSEDIR ?= $(DOCDIR)
endif

RELEASE_BIN  := target/release/rstunnel
SAMPLE_CONFS := conf/stunnel.conf conf/syslog-server.conf conf/syslog-client.conf
UNITS        := conf/systemd/rstunnel.service conf/systemd/rstunnel@.service
LOGROTATE    := conf/logrotate/rstunnel
MANPAGE      := conf/rstunnel.8
DOCS         := README.md
# README "Delivering every line": rsyslog files to copy, documentation, not configuration.
RSYSLOG_EXAMPLES := $(sort $(wildcard conf/rsyslog/*.conf))
# README "Monitoring": alerting rules for the status endpoint, documentation too.
PROMETHEUS_EXAMPLES := conf/prometheus/rstunnel-alerts.yml
LICENSES     := LICENSE-MIT LICENSE-APACHE

# The version in Cargo.toml's [package] table.
VERSION := $(shell awk -F'"' '/^\[/ { p = ($$0 == "[package]") } p && /^version *=/ { print $$2; exit }' Cargo.toml)

# Unit files name /usr/bin/rstunnel and /etc/stunnel/; installed, they name the real places.
SED_PATHS := sed -e 's|/usr/bin/rstunnel|$(BINDIR)/rstunnel|g' \
                 -e 's|/etc/stunnel/|$(CONFDIR)/|g' \
                 -e 's|/etc/logrotate.d/|$(LOGROTATEDIR)/|g'

.PHONY: all build test test-unit test-scripts test-install test-openssl111 test-debian11 \
        test-systemd test-faults test-outages soak \
        demo bench fmt fmt-check clippy check-imports lint \
        install uninstall check-layout check-bin deb rpm clean deps check-deps help

all: build

help:
	@echo "make build      cargo build --release"
	@echo "make test       deps install + check, cargo test --release, e2e-syslog.sh, test-install.sh"
	@echo "make check-deps every command the scripts and tests run is installed by deps.sh"
	@echo "make demo       syslog over TLS on this machine (scripts/demo.sh)"
	@echo "make bench      rstunnel vs stunnel4 (scripts/bench.sh, writes BENCHMARKS.md)"
	@echo "make fmt | fmt-check | clippy"
	@echo "make check-imports  no import loop between the crate's modules (scripts/check-imports.py)"
	@echo "make lint       fmt-check, clippy, check-imports (what .ci/run checks before make test)"
	@echo "make install | uninstall   PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) sysconfdir=$(sysconfdir) LAYOUT=$(LAYOUT)"
	@echo "make deb        target/deb/rstunnel_$(VERSION)_ARCH.deb (dpkg-deb)"
	@echo "make rpm        target/rpm/RPMS/ARCH/rstunnel-$(VERSION)-1.ARCH.rpm (rpmbuild)"
	@echo "make test-install   scripts/test-install.sh: install layouts, .deb, .rpm"
	@echo "make test-openssl111  build against OpenSSL 1.1.1 (openssl-src), run the tests with it"
	@echo "make test-openssl40   build against OpenSSL 4.0 (openssl-src), run the tests with it"
	@echo "make test-debian11    build, install, package and test in a Debian 11 chroot (debootstrap)"
	@echo "make test-debian13    the same in a Debian 13 chroot (OpenSSL 3.5, the hybrid ML-KEM groups)"
	@echo "make test-systemd     the .deb in a minimal Debian 12 root booted by systemd-nspawn: units, reload, logrotate"
	@echo "make test-faults      the fault suite (scripts/test-faults.sh), target/faults-summary.md"
	@echo "make test-outages     lines lost per outage, rstunnel vs stunnel4, TCP and RELP (RSTUNNEL=PATH)"
	@echo "make clean"

build:
	$(CARGO) build --release

deps:
	scripts/deps.sh

# Every external command of scripts/, tests/, .ci/run and this Makefile is installed by
# deps.sh or Essential (scripts/check-deps.py; --static: without asking dpkg).
check-deps:
	python3 scripts/check-deps.py

# Sequential on purpose (also under make -j): deps, the deps check, unit/integration,
# scripts. check-deps.py runs after deps.sh (which installs python3 and the packages it
# checks the COMMANDS table against).
test:
	scripts/deps.sh
	python3 scripts/check-deps.py
	$(CARGO) test --release
	$(CARGO) build --release
	RSTUNNEL=$(RELEASE_BIN) scripts/e2e-syslog.sh
	NOBUILD=1 scripts/test-install.sh

test-unit:
	$(CARGO) test --release

test-scripts: build
	RSTUNNEL=$(RELEASE_BIN) scripts/e2e-syslog.sh

# Needs the release binary (built if missing, never rebuilt), dpkg-deb and rpmbuild
# (the script installs Debian's "rpm" package if rpmbuild is missing).
test-install:
	scripts/test-install.sh

# Old and new OpenSSL and an old distribution (README "Distributions and OpenSSL versions"). Each caches
# what it builds under target/ (target/openssl-1.1.1 + target/ossl111, target/openssl-4.0 +
# target/ossl40; target/debian11-root and target/debian11-rootfs.tar.gz), so a second run
# is quick.
test-openssl111:
	scripts/test-openssl.sh 111

.PHONY: test-openssl40
test-openssl40:
	scripts/test-openssl.sh 40

test-debian11:
	scripts/test-debian11.sh

# Today's Debian (OpenSSL 3.5, stunnel 5.74): the same steps as test-debian11 (both run
# scripts/lib/chroot-test.sh), plus tests/tls_key_exchange.rs's hybrid post-quantum groups;
# cached as target/debian13-root and target/debian13-rootfs.tar.gz.
.PHONY: test-debian13
test-debian13:
	scripts/test-debian13.sh

# The .deb (`make deb` first) and its units under a booted systemd: a minimal Debian 12 root
# (target/systemd-root, cached like test-debian11's; every run boots a throwaway overlay of
# it) under systemd-nspawn. Start, reload, logrotate, setuid/chroot, restart, stop, the
# systemd-analyze security score. See scripts/test-systemd.sh.
test-systemd:
	scripts/test-systemd.sh

# Issue 8's fault suite: the soak (background) + tests/faults_*.rs + scripts/fuzz.sh +
# scripts/test-outages.sh, one summary table (target/faults-summary.md); about 11-12 min.
# See scripts/test-faults.sh.
test-faults:
	scripts/test-faults.sh

# Issue 14's outage measurement alone (about 5 min, root): lines lost, duplicated and
# reordered per fault for rstunnel and stunnel4, plain TCP and RELP, between two network
# namespaces; table in target/outages-summary.md. RSTUNNEL=PATH measures another build
# (then nothing is built); OUTAGES_IMPLS / OUTAGES_TRANSPORTS narrow it.
test-outages:
	@if [ -z "$(RSTUNNEL)" ]; then echo "$(CARGO) build --release"; $(CARGO) build --release; fi
	scripts/test-outages.sh

# The soak alone: SOAK_SECONDS (default 600) of 20 streams + 200 churning sessions through a
# tunnel pair (tests/soak.rs; `make soak SOAK_SECONDS=60` for a short run).
soak:
	$(CARGO) test --release --test soak -- --ignored --nocapture

demo: build
	RSTUNNEL=$(RELEASE_BIN) scripts/demo.sh

# bench.sh builds the release binaries itself: rstunnel and the load generator
# (tools/loadgen, a workspace member that neither `make install` nor the packages ship).
bench:
	scripts/bench.sh

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# No import loop between the top-level modules of src/ or the files of a folder module
# (tls/, config/, net/, ...); --graph prints the arrows and the layers.
check-imports:
	python3 scripts/check-imports.py --self-test
	python3 scripts/check-imports.py

lint: fmt-check clippy check-imports

check-layout:
	@case "$(LAYOUT)" in debian|redhat|generic) ;; \
	*) echo "LAYOUT must be debian, redhat or generic, not '$(LAYOUT)'" >&2; exit 1 ;; esac

check-bin:
	@test -x $(RELEASE_BIN) || { echo "$(RELEASE_BIN) is missing: run 'make build' first" >&2; exit 1; }

# Program, man page, units and documents are replaced. Files under $(sysconfdir)
# (sample configs, logrotate) are never overwritten: an edited
# /etc/stunnel/stunnel.conf survives `make install`.
install: check-layout $(if $(filter 1 yes,$(NOBUILD)),check-bin,build)
	@echo "installing with LAYOUT=$(LAYOUT) PREFIX=$(PREFIX) into '$(DESTDIR)'"
	$(INSTALL) -d -m 0755 "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(MANDIR)/man8" \
		"$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(DOCDIR)" "$(DESTDIR)$(LICENSEDIR)" \
		"$(DESTDIR)$(CONFDIR)" "$(DESTDIR)$(LOGROTATEDIR)"
	$(INSTALL) -m 0755 $(RELEASE_BIN) "$(DESTDIR)$(BINDIR)/rstunnel"
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	sed -e '/^\.TH /s/"rstunnel [^"]*"/"rstunnel $(VERSION)"/' $(MANPAGE) \
		| gzip -9n >"$$tmp/rstunnel.8.gz"; \
	echo "$(INSTALL) -m 0644 rstunnel.8.gz $(DESTDIR)$(MANDIR)/man8/rstunnel.8.gz"; \
	$(INSTALL) -m 0644 "$$tmp/rstunnel.8.gz" "$(DESTDIR)$(MANDIR)/man8/rstunnel.8.gz"; \
	for u in $(UNITS); do \
		$(SED_PATHS) "$$u" >"$$tmp/unit"; \
		echo "$(INSTALL) -m 0644 $$u $(DESTDIR)$(UNITDIR)/$$(basename $$u)"; \
		$(INSTALL) -m 0644 "$$tmp/unit" "$(DESTDIR)$(UNITDIR)/$$(basename $$u)"; \
	done
	$(INSTALL) -m 0644 $(DOCS) "$(DESTDIR)$(DOCDIR)/"
	$(INSTALL) -d -m 0755 "$(DESTDIR)$(DOCDIR)/examples/rsyslog"
	$(INSTALL) -m 0644 $(RSYSLOG_EXAMPLES) "$(DESTDIR)$(DOCDIR)/examples/rsyslog/"
	$(INSTALL) -d -m 0755 "$(DESTDIR)$(DOCDIR)/examples/prometheus"
	$(INSTALL) -m 0644 $(PROMETHEUS_EXAMPLES) "$(DESTDIR)$(DOCDIR)/examples/prometheus/"
	$(INSTALL) -m 0644 $(LICENSES) "$(DESTDIR)$(LICENSEDIR)/"
	@set -e; \
	install_conf() { \
		if [ -e "$$2" ]; then \
			echo "keeping existing $$2"; \
		else \
			echo "$(INSTALL) -m 0644 $$1 $$2"; \
			$(INSTALL) -m 0644 "$$1" "$$2"; \
		fi; \
	}; \
	for f in $(SAMPLE_CONFS); do \
		install_conf "$$f" "$(DESTDIR)$(CONFDIR)/$$(basename $$f)"; \
	done; \
	install_conf $(LOGROTATE) "$(DESTDIR)$(LOGROTATEDIR)/rstunnel"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		echo "now run: systemctl daemon-reload"; fi

# Removes what `make install` put there. Files under $(sysconfdir) go only if
# they are unchanged; their directories stay (other packages, stunnel4 among
# them, use /etc/stunnel too). Empty documentation directories are removed.
uninstall: check-layout
	rm -f "$(DESTDIR)$(BINDIR)/rstunnel" "$(DESTDIR)$(MANDIR)/man8/rstunnel.8.gz"
	rm -f $(foreach u,$(UNITS),"$(DESTDIR)$(UNITDIR)/$(notdir $(u))")
	rm -f $(foreach e,$(RSYSLOG_EXAMPLES),"$(DESTDIR)$(DOCDIR)/examples/rsyslog/$(notdir $(e))")
	rm -f $(foreach e,$(PROMETHEUS_EXAMPLES),"$(DESTDIR)$(DOCDIR)/examples/prometheus/$(notdir $(e))")
	rmdir "$(DESTDIR)$(DOCDIR)/examples/rsyslog" "$(DESTDIR)$(DOCDIR)/examples/prometheus" \
		"$(DESTDIR)$(DOCDIR)/examples" 2>/dev/null || true
	rm -f $(foreach d,$(DOCS),"$(DESTDIR)$(DOCDIR)/$(d)") \
		$(foreach l,$(LICENSES),"$(DESTDIR)$(LICENSEDIR)/$(l)")
	rmdir "$(DESTDIR)$(LICENSEDIR)" 2>/dev/null || true
	rmdir "$(DESTDIR)$(DOCDIR)" 2>/dev/null || true
	@remove_conf() { \
		if [ -e "$$2" ]; then \
			if cmp -s "$$1" "$$2"; then \
				echo "rm -f $$2"; rm -f "$$2"; \
			else \
				echo "keeping modified $$2"; \
			fi; \
		fi; \
	}; \
	for f in $(SAMPLE_CONFS); do \
		remove_conf "$$f" "$(DESTDIR)$(CONFDIR)/$$(basename $$f)"; \
	done; \
	remove_conf $(LOGROTATE) "$(DESTDIR)$(LOGROTATEDIR)/rstunnel"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		echo "now run: systemctl daemon-reload"; fi

# --- Packages ----------------------------------------------------------------
# Both wrap the binary in target/release (built first unless NOBUILD=1) with
# `make install`: the .deb with LAYOUT=debian, the .rpm with LAYOUT=redhat, both
# PREFIX=/usr. Nothing is enabled or started when the package is installed.

DEB_DIR   := target/deb
DEB_STAGE := $(DEB_DIR)/stage
# Debian and RPM order "1.0~rc1" before "1.0"; Cargo writes "1.0.0-rc1".
PKG_VERSION = $(subst -,~,$(VERSION))

# The shared libraries the binary was linked against decide the dependencies
# (Debian 13 renamed libssl3 to libssl3t64).
DEB_DEPENDS_SH = \
	needed=$$(objdump -p $(RELEASE_BIN) | awk '$$1 == "NEEDED" { print $$2 }'); \
	glibc=$$(objdump -T $(RELEASE_BIN) | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1); \
	deps="libc6$${glibc:+ (>= $$glibc)}"; \
	case " $$(echo $$needed) " in \
	(*" libssl.so.3 "*) deps="$$deps, libssl3 (>= 3.0.0) | libssl3t64" ;; \
	(*" libssl.so.1.1 "*) deps="$$deps, libssl1.1 (>= 1.1.1)" ;; \
	(*) deps="$$deps, libssl3 | libssl1.1" ;; \
	esac; \
	case " $$(echo $$needed) " in (*" libgcc_s.so.1 "*) deps="$$deps, libgcc-s1" ;; esac

deb: $(if $(filter 1 yes,$(NOBUILD)),check-bin,build)
	@command -v dpkg-deb >/dev/null || { echo "dpkg-deb not found" >&2; exit 1; }
	rm -rf $(DEB_STAGE)
	mkdir -p $(DEB_STAGE)
	$(MAKE) --no-print-directory install NOBUILD=1 DESTDIR="$(abspath $(DEB_STAGE))" \
		PREFIX=/usr sysconfdir=/etc LAYOUT=debian
	$(INSTALL) -m 0644 conf/debian/copyright $(DEB_STAGE)/usr/share/doc/rstunnel/copyright
	$(INSTALL) -d -m 0755 $(DEB_STAGE)/DEBIAN
	@set -e; arch=$$(dpkg --print-architecture); \
	$(DEB_DEPENDS_SH); \
	size=$$(du -sk --apparent-size --exclude=DEBIAN $(DEB_STAGE) | cut -f1); \
	sed -e 's/@VERSION@/$(PKG_VERSION)/' -e "s/@ARCH@/$$arch/" \
		-e "s/@INSTALLED_SIZE@/$$size/" -e "s/@DEPENDS@/$$deps/" \
		conf/debian/control.in >$(DEB_STAGE)/DEBIAN/control; \
	(cd $(DEB_STAGE) && find etc -type f | LC_ALL=C sort | sed 's|^|/|') >$(DEB_STAGE)/DEBIAN/conffiles; \
	chmod 0644 $(DEB_STAGE)/DEBIAN/control $(DEB_STAGE)/DEBIAN/conffiles; \
	$(INSTALL) -m 0755 conf/debian/postinst conf/debian/prerm conf/debian/postrm $(DEB_STAGE)/DEBIAN/; \
	echo "--- DEBIAN/control"; cat $(DEB_STAGE)/DEBIAN/control; \
	echo "--- DEBIAN/conffiles"; cat $(DEB_STAGE)/DEBIAN/conffiles; \
	rm -f $(DEB_DIR)/rstunnel_*.deb; \
	dpkg-deb --root-owner-group --build $(DEB_STAGE) $(DEB_DIR)/rstunnel_$(PKG_VERSION)_$$arch.deb

# rpmbuild comes with Debian's "rpm" package (apt-get install rpm). --nodeps:
# the build needs nothing from an RPM database (Debian's is empty).
RPM_TOPDIR := $(abspath target/rpm)

rpm: $(if $(filter 1 yes,$(NOBUILD)),check-bin,build)
	@command -v rpmbuild >/dev/null || { echo "rpmbuild not found: apt-get install rpm (Debian), dnf install rpm-build (Red Hat)" >&2; exit 1; }
	rm -rf $(RPM_TOPDIR)
	mkdir -p $(RPM_TOPDIR)/BUILD $(RPM_TOPDIR)/BUILDROOT $(RPM_TOPDIR)/RPMS $(RPM_TOPDIR)/SOURCES $(RPM_TOPDIR)/SPECS $(RPM_TOPDIR)/SRPMS $(RPM_TOPDIR)/tmp
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL rpmbuild -bb --nodeps \
		--define "_topdir $(RPM_TOPDIR)" --define "_tmppath $(RPM_TOPDIR)/tmp" \
		--define "rstunnel_version $(PKG_VERSION)" \
		--define "rstunnel_srcdir $(CURDIR)" \
		conf/rpm/rstunnel.spec
	@find $(RPM_TOPDIR)/RPMS -name '*.rpm'

clean:
	$(CARGO) clean
