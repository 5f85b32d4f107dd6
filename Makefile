# Two entry points for users, each doing all set-up first (scripts/setup is idempotent).
.PHONY: setup data compare demo test bench bench-report bundle

setup:
	@scripts/setup

data:
	@scripts/setup --data

# The README's main command: Mixup vs Mixup Pause on Fashion-MNIST, 3 seeds, on the CPU.
compare: data
	cargo run --release -- compare --config configs/quick-compare.toml

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
