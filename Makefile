# Two entry points for users, each doing all set-up first (scripts/setup is idempotent).
.PHONY: setup demo test bench bench-report bundle

setup:
	@scripts/setup

demo: setup
	cargo run --release -- demo

test: setup
	cargo test --release

bench: setup
	cargo bench --bench ops

bench-report:
	@scripts/bench-report

bundle: setup
	scripts/gpu-bundle
