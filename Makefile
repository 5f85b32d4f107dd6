# Two entry points for users, each doing all set-up first (scripts/setup is idempotent).
.PHONY: setup data compare demo test bench bench-report bundle

setup:
	@scripts/setup

data:
	@scripts/setup --data

# The README's main command: Mixup vs Mixup Pause on Fashion-MNIST, 3 seeds, on the CPU.
compare: data
	cargo run --release -p enlighten-trainer -- compare --config configs/quick-compare.toml

demo: setup
	cargo run --release -p enlighten-trainer -- demo

# The library with its reference oracles (its tests run the kernels in the emulator crate), and the trainer.
test: setup
	cargo test --release --workspace --features enlighten/testing

bench: setup
	cargo bench -p enlighten --features testing --bench ops

bench-report:
	@scripts/bench-report

bundle: setup
	scripts/gpu-bundle
