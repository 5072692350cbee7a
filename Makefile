# paymentsd: build, test, run. `make deps` once on a fresh Debian 12, then `make run` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := build

SWIFT ?= swift
PYTHON ?= python3
PREFIX ?= /usr/local
DESTDIR ?=

# postgresql: the server the integration tests start for themselves (initdb, pg_ctl; it also
# creates the `postgres` user they run it as under root); libpq-dev: the PostgreSQL store's client.
APT_PACKAGES := libprotobuf-c-dev protobuf-c-compiler libcurl4-openssl-dev libsqlite3-dev libssl-dev \
                pkg-config systemd util-linux e2fsprogs openssl postgresql libpq-dev
PROTO := proto/payments/v1/payments.proto
PROTO_C_DIR := Sources/PaymentsProtoC
RUN_DIR := var
# apt-get needs root; a developer who is not root gets sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FAKE_PORT ?= 12111
HTTP_PORT ?= 8089

.PHONY: deps build test test-swift test-python test-fuzz-replay check-proto check-systemd proto wire-messages run install bench \
        fuzz fuzz-build fuzz-smoke fuzz-corpus clean

## deps: install every Debian and Python package the build and the tests need (idempotent)
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "Debian packages: all present"; fi
	@$(PYTHON) -m pip --version >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-pip; }
	@# Debian's own python3 refuses pip installs (PEP 668) unless told; other pythons install as usual.
	$(PYTHON) -m pip install -q -r requirements-dev.txt 2>/dev/null \
	  || $(PYTHON) -m pip install -q --break-system-packages -r requirements-dev.txt

## build: debug build of the daemon, the CLI and the tests
build:
	$(SWIFT) build --build-tests

## proto: regenerate the committed protobuf-c code from proto/
proto:
	protoc-c -Iproto --c_out=$(PROTO_C_DIR) $(PROTO)
	mkdir -p $(PROTO_C_DIR)/include/payments/v1
	mv $(PROTO_C_DIR)/payments/v1/payments.pb-c.h $(PROTO_C_DIR)/include/payments/v1/payments.pb-c.h

## wire-messages: regenerate the Swift bridging of the method messages (scripts/gen-wire-messages.py)
wire-messages:
	$(PYTHON) scripts/gen-wire-messages.py > Sources/PaymentsWire/Messages.generated.swift

## check-proto: fail when the committed generated code is not what `make proto` produces
check-proto:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	protoc-c -Iproto --c_out=$$tmp $(PROTO) && \
	diff -u $(PROTO_C_DIR)/payments/v1/payments.pb-c.c $$tmp/payments/v1/payments.pb-c.c && \
	diff -u $(PROTO_C_DIR)/include/payments/v1/payments.pb-c.h $$tmp/payments/v1/payments.pb-c.h && \
	echo "generated protobuf-c code is current"

## check-systemd: systemd-analyze verify on the units, and their exposure score
check-systemd: build
	scripts/verify-systemd.sh $(CURDIR)/.build/debug/paymentsd

## test: every Swift test, then every Python test (fake Stripe and the real daemon over its socket)
test: deps check-proto build check-systemd test-swift test-fuzz-replay test-python fuzz-smoke

# The Swift tests of the PostgreSQL store run against a throwaway server (tests/with_postgres.py).
test-swift:
	$(PYTHON) tests/with_postgres.py -- $(SWIFT) test --skip-build

test-python:
	$(PYTHON) -m pytest -q -p no:cacheprovider tests

# The fuzz targets (Sources/paymentsd-fuzz): one binary, the target named by FUZZ_TARGET.
FUZZ_TARGETS := frames envelope methods signature event stripe-json http
FUZZ_SECONDS ?= 60
FUZZ_SCRATCH := .build-fuzz
FUZZ_BIN := $(FUZZ_SCRATCH)/release/paymentsd-fuzz
# libFuzzer and AddressSanitizer (LeakSanitizer with it) on an optimised build; -enable-testing
# lets the targets reach the decoders' internal types. lld: gold fails on the sanitizer runtime.
FUZZ_BUILD_FLAGS := -c release --product paymentsd-fuzz --scratch-path $(FUZZ_SCRATCH) \
  -Xswiftc -enable-testing -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
  -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld

## test-fuzz-replay: the committed corpus and every kept find through each target, on the ordinary build
test-fuzz-replay:
	@for t in $(FUZZ_TARGETS); do mkdir -p fuzz/regressions/$$t; \
	  FUZZ_TARGET=$$t .build/debug/paymentsd-fuzz fuzz/corpus/$$t fuzz/regressions/$$t || exit 1; done

fuzz-build:
	$(SWIFT) build $(FUZZ_BUILD_FLAGS)

## fuzz: every target for FUZZ_SECONDS (default 60) under libFuzzer and ASan; fails on any crash,
## leak or sanitizer report (the input is in fuzz/findings/). What it grows stays in fuzz/grown/.
fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do mkdir -p fuzz/grown/$$t fuzz/findings; \
	  dict=$$( [ -f fuzz/dict/$$t.dict ] && echo -dict=fuzz/dict/$$t.dict ); \
	  len=$$( [ $$t = frames ] && echo -max_len=512 ); \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  SWIFT_BACKTRACE=enable=no FUZZ_TARGET=$$t $(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 $$len \
	    -artifact_prefix=fuzz/findings/$$t- $$dict fuzz/grown/$$t fuzz/corpus/$$t 2>&1 | grep -E "^#[0-9]+.*DONE|stat::|ERROR|SUMMARY|Test unit written"; \
	  [ $${PIPESTATUS[0]} -eq 0 ] || { echo "fuzz: $$t failed; the input is in fuzz/findings/"; exit 1; }; done

## fuzz-smoke: `make fuzz` for 20 s a target (make test and CI)
fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=20

## fuzz-corpus: regenerate the committed seed corpus (scripts/gen-fuzz-corpus.py)
fuzz-corpus:
	$(PYTHON) scripts/gen-fuzz-corpus.py

## run: build, then start the fake Stripe and the daemon on ./var/ (Ctrl-C stops both)
run: deps
	$(SWIFT) build --product paymentsd
	$(SWIFT) build --product paymentsctl
	mkdir -p $(RUN_DIR)
	@echo "fake Stripe on http://127.0.0.1:$(FAKE_PORT); daemon on $(RUN_DIR)/paymentsd.sock, webhooks at http://127.0.0.1:$(HTTP_PORT)/stripe/webhook"
	@echo "in another terminal:  .build/debug/paymentsctl --socket $(RUN_DIR)/paymentsd.sock health"
	@# The fake posts every event it makes to the daemon's webhook endpoint, signed and retried as Stripe does.
	@$(PYTHON) -m fakestripe --port $(FAKE_PORT) --api-key sk_test_local --webhook-secret whsec_local \
	  --forward-to http://127.0.0.1:$(HTTP_PORT)/stripe/webhook & fake=$$!; \
	trap 'kill $$fake 2>/dev/null' EXIT INT TERM; \
	for i in $$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$(FAKE_PORT)) 2>/dev/null && break; sleep 0.1; done; \
	PAYMENTSD_SOCKET=$(RUN_DIR)/paymentsd.sock PAYMENTSD_DB=$(RUN_DIR)/payments.db \
	PAYMENTSD_HTTP_LISTEN=127.0.0.1:$(HTTP_PORT) \
	STRIPE_API_BASE=http://127.0.0.1:$(FAKE_PORT) STRIPE_SECRET_KEY=sk_test_local \
	STRIPE_WEBHOOK_SECRETS=whsec_local .build/debug/paymentsd

## install: release binaries, systemd units, sysusers and tmpfiles snippets
install:
	$(SWIFT) build -c release --product paymentsd
	$(SWIFT) build -c release --product paymentsctl
	install -D -m 0755 .build/release/paymentsd $(DESTDIR)$(PREFIX)/bin/paymentsd
	install -D -m 0755 .build/release/paymentsctl $(DESTDIR)$(PREFIX)/bin/paymentsctl
	install -D -m 0644 systemd/paymentsd.socket $(DESTDIR)/etc/systemd/system/paymentsd.socket
	install -D -m 0644 systemd/paymentsd-http.socket $(DESTDIR)/etc/systemd/system/paymentsd-http.socket
	install -D -m 0644 systemd/paymentsd.service $(DESTDIR)/etc/systemd/system/paymentsd.service
	install -D -m 0644 systemd/paymentsd.sysusers $(DESTDIR)/usr/lib/sysusers.d/paymentsd.conf
	install -D -m 0644 systemd/paymentsd.tmpfiles $(DESTDIR)/usr/lib/tmpfiles.d/paymentsd.conf
	install -D -m 0644 systemd/paymentsd.env.example $(DESTDIR)/etc/paymentsd/paymentsd.env.example

## bench: release build, then Health round trips against a raw socket echo (see BENCHMARKS.md)
bench:
	$(SWIFT) build -c release --product paymentsd-bench
	mkdir -p .build && $(CC) -O2 -Wall -Wextra -o .build/echo-server bench/echo-server.c
	$(PYTHON) tests/with_postgres.py --durable -- .build/release/paymentsd-bench

clean:
	rm -rf .build $(FUZZ_SCRATCH) $(RUN_DIR) fuzz/grown fuzz/findings
