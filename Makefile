# The commands a person types. Everything else is cargo.

CARGO ?= cargo
SPAMSCOPE := target/release/spamscope
DATA := testdata/twitch/xqcow-2019-09-15.irc testdata/youtube/chilledcow-2020-11.chat-downloader.json

.PHONY: run test lint fmt bench eval model build clean

## run: replay the bundled real chat through the detector and print spam events and decisions
run: build
	$(SPAMSCOPE) replay $(DATA)

## test: every test of the workspace (unit, property, end-to-end)
test:
	$(CARGO) test --workspace --all-targets

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: detector throughput (criterion) and bytes of state per user and per stream
bench:
	$(CARGO) bench -p spamscope-detect --bench detector
	$(CARGO) bench -p spamscope-detect --bench state_size

## model: retrain the bundled message score model on the labelled CSV files
model: build
	$(SPAMSCOPE) train --out services/common/detect/model/score-model.json testdata/labeled/*.csv

## eval: moderation and labelled-comment evaluation on the bundled data
eval: build
	$(SPAMSCOPE) eval --moderation testdata/twitch/xqcow-2019-09-15.irc
	$(SPAMSCOPE) eval --moderation testdata/youtube/chilledcow-2020-11.chat-downloader.json
	$(SPAMSCOPE) eval --labeled testdata/labeled/youtube-spam-psy.csv testdata/labeled/youtube-spam-katyperry.csv testdata/labeled/youtube-spam-lmfao.csv

build:
	$(CARGO) build --release -p spamscope

clean:
	$(CARGO) clean
