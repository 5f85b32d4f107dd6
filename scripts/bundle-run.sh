#!/usr/bin/env bash
# run.sh of the GPU bundle (copied there by scripts/gpu-bundle).
#   run.sh [--torch-lib DIR] [--out DIR] [--full | --quick]
# Finds PyTorch's lib directory (the given one, else python3's torch), prints device, driver and
# torch versions and the device's copy bandwidth, runs every test binary (CUDA cases included; the
# ops' CUDA cases a second time on kernels NVRTC compiles there), the demo, 300 ResNet18 trainer
# steps on Fashion-MNIST three ways (fused ops, tch composites, bf16 autocast), each benchmark in
# a short mode (--full: criterion's defaults) with PyTorch's peers beside it (bench-torch.py:
# eager, torch.compile, timm, torchvision), compute-sanitizer memcheck and racecheck over the
# CUDA cases when available (--quick: neither sanitizer, and no emulated test cases), keeps raw
# outputs under --out, and ends with each step's seconds and `N passed, N failed`. Exits non-zero
# on a machine without a GPU.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
torch_lib="" out="$here/out" full=0 quick=0
while (( $# )); do
  case $1 in
    --torch-lib) torch_lib=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --full) full=1; shift ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; } && [[ ! -e /dev/nvidia0 ]]; then
  echo "run.sh: no NVIDIA GPU or driver on this machine (nvidia-smi finds none, /dev/nvidia0 absent);" >&2
  echo "run.sh: the bundle validates CUDA kernels and needs a GPU machine with PyTorch 2.11." >&2
  exit 1
fi
if [[ -z "$torch_lib" ]]; then
  torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) || torch_lib=""
fi
if [[ -z "$torch_lib" || ! -f "$torch_lib/libtorch_cpu.so" ]]; then
  echo "run.sh: PyTorch's lib directory not found (tried '${torch_lib}'); pass --torch-lib DIR" >&2
  exit 1
fi
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CRITERION_HOME="$out/criterion"
mkdir -p "$out"

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo "torch: python import failed"
echo "torch lib: $torch_lib"
date -u
# The ceiling for the bandwidth fractions: a large device-to-device copy, bytes read + written.
python3 - <<'PY' 2>&1 | tee "$out/copy-bandwidth.log"
import torch
x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda").random_(0, 255)
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
b, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
b.record()
for _ in range(20):
    y.copy_(x)
e.record(); e.synchronize()
s = b.elapsed_time(e) / 1e3 / 20
print(f"copy bandwidth: {2 * x.numel() / s / 1e9:.0f} GB/s (2 GiB device-to-device, read + written, mean of 20)")
PY

passed=0 failed=0 timings=""
# step NAME CMD...: runs CMD, keeps its output in $out/NAME.log, counts libtest results or the exit code.
step() {
  local name=$1; shift
  echo "== $name"
  local began=$SECONDS
  "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  timings+="$name $((SECONDS - began))s rc=$rc"$'\n'
  local line
  line=$(grep -E '^test result: ' "$out/$name.log" | tail -1)
  if [[ -n "$line" ]]; then
    local p f
    p=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    passed=$((passed + p)); failed=$((failed + f))
    (( rc == 0 || f > 0 )) || failed=$((failed + 1))
  elif (( rc == 0 )); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
}

step info "$here/bin/enlighten" info
# --quick skips the emulated cases (`emu::`): CI runs them on every push, and on the first H200
# run they took 348 of the ops binary's 350 s.
skip=()
(( quick )) && skip=(--skip emu::)
for t in "$here"/tests/*; do
  step "test-$(basename "$t")" "$t" --include-ignored "${skip[@]}"
done
# The same CUDA cases on kernels NVRTC compiles here (the binaries' fatbin has this device's SASS,
# so without ENLIGHTEN_KERNELS=nvrtc it would be used): NVRTC found beside PyTorch's libtorch_cuda,
# the device's exact architecture, a fresh cache under $out.
rm -rf "$out/kernel-cache"
ENLIGHTEN_KERNELS=nvrtc ENLIGHTEN_CACHE="$out/kernel-cache" step test-ops-nvrtc "$here/tests/ops" cuda:: --include-ignored
ls -la "$out/kernel-cache/kernels" 2>/dev/null
step demo "$here/bin/enlighten" demo --device cuda
# compute-sanitizer (memcheck, racecheck) over the CUDA cases, when the machine has it; --quick skips.
if (( ! quick )) && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    step "sanitizer-$tool" compute-sanitizer --tool "$tool" --error-exitcode 1 "$here/tests/ops" cuda:: --include-ignored
  done
fi
# The trainer on the GPU: 300 ResNet18 steps on Fashion-MNIST (15,000 training images), with
# enlighten's fused ops, with the tch composites, and with bf16 autocast; the CLI prints each
# run's step time and its parts (host time: a step's total is exact, its parts are launch times
# on CUDA) from summary.json's timing.
if [[ -d "$here/data/fashion-mnist" ]]; then
  for variant in fused composite bf16; do
    extra=(--set run.ops=fused)
    [[ $variant == composite ]] && extra=(--set run.ops=composite)
    [[ $variant == bf16 ]] && extra=(--set run.autocast=bf16)
    rm -rf "$out/runs/resnet18-$variant"
    step "train-resnet18-$variant" "$here/bin/enlighten" train --config "$here/configs/fashion-mnist-resnet18-compare.toml" \
      --device cuda --set run.name="resnet18-$variant" --set run.out_dir="$out/runs" --set data.dir="$here/data/fashion-mnist" \
      --set run.max_steps=300 --set run.eval_every=100 --set strategy.kind=mixup --set strategy.drop_share=0.1 \
      --set "strategy.ep={end=\"epochs\", epochs=100}" "${extra[@]}"
  done
fi
# --quick: criterion's quick mode (doubling the iterations until two runs agree within 5%).
short=(--warm-up-time 0.2 --measurement-time 0.5 --sample-size 10)
(( quick )) && short=(--quick)
(( full )) && short=()
# Only the CUDA groups: the CPU ones are measured on the build machine (docs/RESULTS.md).
for b in "$here"/benches/*; do
  step "bench-$(basename "$b")" "$b" --bench /cuda "${short[@]}"
done
# PyTorch's side of the same groups on this GPU: eager, torch.compile, timm's Mixup and
# torchvision's MixUp/CutMix (CUDA events after warm-up; bench-report puts them beside ours).
torch_seconds=0.3
(( full )) && torch_seconds=2
step bench-torch python3 "$here/bench-torch.py" --device cuda --seconds "$torch_seconds" --out "$out/bench-torch.json"
python3 "$here/bench-report" --criterion-dir "$CRITERION_HOME" --torch "$out/bench-torch.json" | tee "$out/bench-report.md"
python3 "$here/bench-report" --json --criterion-dir "$CRITERION_HOME" --torch "$out/bench-torch.json" > "$out/bench-report.json"
printf "%s" "$timings"
echo "$passed passed, $failed failed"
(( failed == 0 ))
