# Rapport: the two commands a newcomer needs are `make run` and `make test`.
#
#   make run     install what is missing, start a local broker and every
#                service with data under ./data, feed demo traffic
#                (RAPPORT_DEMO=0 to skip), stay in the foreground until Ctrl-C
#   make test    start a private broker on a free port, run every test
#                (unit, router, end-to-end), stop the broker
#   make bench   throughput and latency figures for this machine (the log,
#                then the analytics for RAPPORT_SCORES_CUSTOMERS=1000000)
#   make lint    rustfmt and clippy, warnings are errors
#   make fuzz    the fuzz-style properties of the parsers and routers with
#                RAPPORT_FUZZ_CASES cases each (default 1000000; make test
#                runs them with 20 000)
#
# Build artefacts are reused between runs; set CARGO_TARGET_DIR to share them
# between checkouts (CI keeps them in ~/.cache/rapport/target).

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test bench lint fuzz build tools clean

tools:
	@infra/tools.sh >/dev/null

build: tools
	$(CARGO) build --workspace --bins

run: build
	infra/run.sh

test: tools
	infra/test.sh

bench: tools
	infra/bench.sh
	$(CARGO) run --quiet -p rapport-e2e --bin rapport-scores-bench

RAPPORT_FUZZ_CASES ?= 1000000
fuzz: tools
	RAPPORT_FUZZ_CASES=$(RAPPORT_FUZZ_CASES) $(CARGO) test --workspace --lib -- fuzz --test-threads 2

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf data
