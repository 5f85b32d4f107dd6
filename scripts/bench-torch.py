"""PyTorch's side of benches/ops.rs: the same composites on the same shapes, written as timm and
PyTorch users write them, timed eagerly and under `torch.compile`.

    python scripts/bench-torch.py [--device cpu|cuda] [--out FILE] [--filter REGEX] [--threads N] [--seconds S] [--list]

Every row carries the group id of the criterion group it stands beside
(`op/variant/size/dtype/device`), so scripts/bench-report can put the two side by side. For
each group the same Python function runs eagerly and compiled (`torch.compile(dynamic=False)`,
a fresh compilation per group): compilation and warm-up calls are excluded, then samples of
enough calls to last about 20 ms are timed until --seconds pass (at least 5 samples); the
median time per call is reported with every sample. Results are merged into FILE (by group
id), so a filtered run replaces only its rows.

On CUDA (--device cuda: the GPU bundle's run.sh) the benches' CUDA shapes are used, samples are
timed with CUDA events, and the Mixup groups and the `ep step` group also time the library a
user would pick instead: timm's `Mixup` (in-place flip, beside `flip in place` and `ep step`)
and torchvision's `MixUp` and `CutMix` (out of place, beside `perm` and `ep step`), each with
the smoothed soft-target cross-entropy, `topk` removal and backward where the group has a loss
(rows `timm_ns`, `tv_mixup_ns`, `tv_cutmix_ns`).
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import time

import torch
import torch._inductor.config
import torch.nn.functional as F

SAMPLE_S = 0.02  # one sample lasts about this long, as criterion's batched iterations do


# --- the composites, as the Rust benches' tch composites compute them ---------------------------


def mixup_perm(x, perm, lam):
    return x * lam + x[perm] * (1 - lam)


def mixup_perm_into(x, perm, lam, out):
    out.copy_(x * lam + x[perm] * (1 - lam))


def mixup_flip_(x, lam):
    # timm's in-place flip form.
    x.mul_(lam).add_(x.flip(0).mul_(1 - lam))


def ce_hlr(logits, y, drop_share=0.1, eps=0.1):
    """cross_entropy(reduction='none') -> topk of the detached losses -> keep mask -> mean."""
    return remove_highest(F.cross_entropy(logits, y, reduction="none", label_smoothing=eps), drop_share)


def ce_mixed(logits, y_a, y_b, lam=0.3, eps=0.1):
    ce = lambda y: F.cross_entropy(logits, y, reduction="none", label_smoothing=eps)
    return (ce(y_a) * lam + ce(y_b) * (1 - lam)).mean()


def ce_plain(logits, y):
    return F.cross_entropy(logits, y, reduction="none").mean()


def ce_mixed_hlr(logits, y, perm, lam, drop_share=0.1, eps=0.1):
    """The mixed-target smoothed cross-entropy with topk removal, as `ep step` computes it."""
    ce = lambda t: F.cross_entropy(logits, t, reduction="none", label_smoothing=eps)
    return remove_highest(ce(y) * lam + ce(y[perm]) * (1 - lam), drop_share)


def ep_step_with(mixup, loss):
    """benches/ops.rs `ep step`: Mixup of the batch, then the loss and its gradient. The two
    halves are separate functions so that torch.compile keeps the mixed batch, which nothing in
    the loss reads (compiled as one, it would drop it as dead code)."""

    def step(x, perm, lam, logits, y):
        mixup(x, perm, lam)
        backward_of(loss)(logits, y, perm, lam)

    return step


ep_step = ep_step_with(mixup_perm, ce_mixed_hlr)


def remove_highest(per, drop_share):
    """High-Loss Removal over per-row losses: topk of the detached losses -> keep mask -> mean."""
    b = per.shape[0]
    k = math.floor(drop_share * b)
    if k == 0:
        return per.mean()
    _, idx = per.detach().topk(k, sorted=False)
    keep = torch.ones(b, device=per.device).index_fill(0, idx, 0.0)
    return (per * keep).sum() / (b - k)


def with_soft_loss(mix):
    """A batch mixer as its library is used (`mix(x, y)` -> mixed x, soft targets), then the
    soft-target cross-entropy, topk removal and backward into the logits."""

    def step(x, y, logits, drop_share=0.1):
        _, soft = mix(x, y)
        leaf = logits.detach().requires_grad_(True)
        per = -(soft * F.log_softmax(leaf, dim=1)).sum(1)
        remove_highest(per, drop_share).backward()

    return step


def library_mixers(classes):
    """{row: mixer} for timm's Mixup and torchvision's MixUp/CutMix, where installed."""
    out = {}
    try:
        from timm.data import Mixup as TimmMixup
        out["timm_ns"] = TimmMixup(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=classes)
    except ImportError as e:
        print(f"timm not timed: {e}")
    try:
        from torchvision.transforms import v2
        out["tv_mixup_ns"] = v2.MixUp(alpha=1.0, num_classes=classes)
        out["tv_cutmix_ns"] = v2.CutMix(alpha=1.0, num_classes=classes)
    except ImportError as e:
        print(f"torchvision not timed: {e}")
    return out


def zero_counts(acts):
    return [(t == 0).reshape(t.shape[0], -1).sum(1) for t in acts]


def dot_norms(a, b):
    s = [torch.zeros(()), torch.zeros(()), torch.zeros(())]
    for x, y in zip(a, b):
        x, y = x.reshape(-1), y.reshape(-1)
        s[0] = s[0] + x.dot(y)
        s[1] = s[1] + x.dot(x)
        s[2] = s[2] + y.dot(y)
    return s


def backward_of(loss_fn):
    """A fresh leaf per call, then backward: what the Rust ce benches time on both sides."""

    def step(logits, *rest):
        leaf = logits.detach().requires_grad_(True)
        loss_fn(leaf, *rest).backward()

    return step


# --- the benches' shapes -------------------------------------------------------------------------


def resnet18_activations(batch):
    shapes = [(64, 32, 32)]
    for c, hw in ((64, 32), (128, 16), (256, 8), (512, 4)):
        shapes += [(c, hw, hw)] * 4
    return [torch.randn(batch, *s).relu() for s in shapes]


def resnet18_params():
    shapes = [(64, 3, 3, 3), (64,), (64,)]
    cin = 64
    for c in (64, 128, 256, 512):
        for block in range(2):
            first_in = cin if block == 0 else c
            shapes += [(c, first_in, 3, 3), (c,), (c,), (c, c, 3, 3), (c,), (c,)]
            if block == 0 and first_in != c:
                shapes += [(c, first_in, 1, 1), (c,), (c,)]
        cin = c
    shapes += [(10, 512), (10,)]
    return [torch.randn(*s) for s in shapes]


DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16"}


DEVICE = "cpu"  # --device; tensors are made there through torch.set_default_device


def gid(op, variant, shape, dtype=torch.float32):
    return f"{op}/{variant}/{'x'.join(map(str, shape))}/{DTYPES[dtype]}/{DEVICE}"


def mixer_peers(shape, dt, classes=1000):
    """Library mixers beside a Mixup group: on CUDA, 4-d f32 image batches, with labels."""
    if DEVICE != "cuda" or len(shape) != 4 or dt != torch.float32:
        return {}

    def args():
        torch.manual_seed(0)
        return torch.randn(shape), torch.randint(classes, (shape[0],))

    return {row: (lambda x, y, m=m: m(x, y), args) for row, m in library_mixers(classes).items()}


def ep_step_case():
    """benches/ops.rs `ep step` (CUDA only), with the library mixers and the same loss beside it."""
    shape, classes = (256, 3, 224, 224), 1000

    def args():
        torch.manual_seed(0)
        return (torch.randn(shape), torch.randperm(shape[0]), 0.37, torch.randn(shape[0], classes),
                torch.randint(classes, (shape[0],)))

    def mixer_args():
        x, _, _, logits, y = args()
        return x, y, logits

    peers = {row: (with_soft_loss(m), mixer_args) for row, m in library_mixers(classes).items()}
    return [gid("ep step", "mixup + mixed ce hlr r=0.1 eps=0.1, autograd", shape)], ep_step, args, peers


def cases():
    """(group ids, composite, argument factory, peers) per group: peers are {row: (function,
    argument factory)} of other libraries timed beside the composite.

    A composite that two criterion groups share (the ce rows `autograd` and `dlogits` time the
    same tch composite) is timed once and reported for both ids.
    """
    for shape, dtypes in (((128, 3, 32, 32), (torch.float32,)),
                          ((256, 3, 224, 224), (torch.float32, torch.bfloat16)),
                          ((512, 720, 7), (torch.float32,))):
        for dt in dtypes:
            def args(shape=shape, dt=dt):
                torch.manual_seed(0)
                x = torch.randn(shape).to(dt)
                return x, torch.randperm(shape[0])
            peers = mixer_peers(shape, dt)
            out_of_place = {k: v for k, v in peers.items() if k != "timm_ns"}
            in_place = {k: v for k, v in peers.items() if k == "timm_ns"}
            yield [gid("mixup", "perm", shape, dt)], mixup_perm, lambda a=args: (*a(), 0.37), out_of_place
            yield [gid("mixup", "perm into buffer", shape, dt)], mixup_perm_into, \
                lambda a=args: (*(xp := a()), 0.37, torch.empty_like(xp[0])), {}
            yield [gid("mixup", "flip in place", shape, dt)], mixup_flip_, lambda a=args: (a()[0], 0.37), in_place
    for b, c in ((128, 10), (128, 100), (1024, 1000), (4096, 1000)):
        def logits_y(b=b, c=c):
            torch.manual_seed(0)
            return torch.randn(b, c), torch.randint(c, (b,))
        yield ([gid("ce", "hlr r=0.1 eps=0.1, autograd", (b, c)), gid("ce", "hlr r=0.1 eps=0.1, dlogits", (b, c))],
               ce_hlr, logits_y, {})
        yield ([gid("ce", "mixed targets eps=0.1, autograd", (b, c))], ce_mixed,
               lambda f=logits_y: (*(ly := f()), ly[1].roll(1, 0)), {})
    tokens, vocab = (16384, 32768) if DEVICE == "cuda" else (4096, 8192)
    def lm():
        torch.manual_seed(0)
        return torch.randn(tokens, vocab), torch.randint(vocab, (tokens,))
    yield [gid("ce", "lm tokens, dlogits", (tokens, vocab))], ce_plain, lm, {}
    for batch in (128, 512) if DEVICE == "cuda" else (128,):
        yield [gid("zero_counts", "resnet18 relu outputs", (batch, 557056))], zero_counts, \
            lambda batch=batch: (resnet18_activations(batch),), {}
    n = sum(p.numel() for p in resnet18_params())
    yield [gid("dot_norms", "resnet18 params", (n,))], dot_norms, lambda: (resnet18_params(), resnet18_params()), {}
    if DEVICE == "cuda":
        yield ep_step_case()


# --- timing ----------------------------------------------------------------------------------------


def time_calls(f, args, seconds):
    """Median seconds per call over samples of calls lasting about SAMPLE_S; warm-up excluded.
    On CUDA each sample is timed by events around its calls."""
    clock = cuda_clock if DEVICE == "cuda" else host_clock
    for _ in range(3):
        f(*args)
    one = max(clock(f, args, 1), 1e-7)
    per_sample = max(1, int(SAMPLE_S / one))
    samples = []
    start = time.perf_counter()
    while len(samples) < 5 or time.perf_counter() - start < seconds:
        samples.append(clock(f, args, per_sample) / per_sample)
    return statistics.median(samples), samples


def host_clock(f, args, calls):
    t = time.perf_counter()
    for _ in range(calls):
        f(*args)
    return time.perf_counter() - t


def cuda_clock(f, args, calls):
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(calls):
        f(*args)
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3


def variants(fn):
    """(eager, compiled) forms of one composite; a loss's backward runs outside the compiled part."""
    compile_ = lambda g: torch.compile(g, dynamic=False)
    if fn is ep_step:
        return ep_step, ep_step_with(compile_(mixup_perm), compile_(ce_mixed_hlr))
    if fn.__name__.startswith("ce_"):
        return backward_of(fn), backward_of(compile_(fn))
    return fn, compile_(fn)


def run_case(ids, fn, make_args, peers, seconds):
    args = make_args()
    torch._dynamo.reset()  # a fresh compilation per group: no recompile limit, no dynamic shapes
    eager, compiled = variants(fn)
    t = time.perf_counter()
    compiled(*args)
    compile_s = time.perf_counter() - t
    out = {}
    timed = [("eager", eager, args), ("compile", compiled, args)]
    timed += [(row[:-3], peer, peer_args()) for row, (peer, peer_args) in peers.items()]
    for name, f, f_args in timed:
        med, samples = time_calls(f, f_args, seconds)
        out[f"{name}_ns"] = med * 1e9
        out[f"{name}_samples_ns"] = [round(s * 1e9, 1) for s in samples]
    out["compile_s"] = round(compile_s, 2)
    out["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {i: out for i in ids}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--out", default=os.path.join(here, "..", "target", "bench-torch", "results.json"))
    p.add_argument("--filter", default="", help="only groups whose id matches this regex")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="intra-op threads (default: the cores this process may use, as libtorch in the Rust benches)")
    p.add_argument("--seconds", type=float, default=2.0, help="measurement time per function")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the groups run")
    p.add_argument("--list", action="store_true",
                   help="print the group ids of each selected case (tab-separated, a case a line); time nothing")
    args = p.parse_args()
    global DEVICE
    DEVICE = args.device
    torch.set_default_device(DEVICE)
    torch.set_num_threads(args.threads)
    # Inductor writes its thread count into the generated C++ (`omp parallel num_threads(N)`),
    # decided in its compile workers, not by this process's setting: pin it too.
    torch._inductor.config.cpp.threads = args.threads
    pattern = re.compile(args.filter)

    results = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f).get("groups", {})
    for ids, fn, make_args, peers in cases():
        if not any(pattern.search(i) for i in ids):
            continue
        if args.list:
            print("\t".join(ids))
            continue
        row = run_case(ids, fn, make_args, peers, args.seconds)
        for i, r in row.items():
            results[i] = r
            others = "".join(f", {k[:-3]} {r[k] / 1e6:.3f} ms" for k in PEER_ROWS if k in r)
            print(f"{i}: eager {r['eager_ns'] / 1e6:.3f} ms, torch.compile {r['compile_ns'] / 1e6:.3f} ms"
                  f"{others} (compiled in {r['compile_s']} s)", flush=True)
        save(args.out, results)  # after every group: a run stopped early keeps what it measured
    if not args.list:
        print(f"wrote {os.path.abspath(args.out)}")


PEER_ROWS = ("timm_ns", "tv_mixup_ns", "tv_cutmix_ns")


def save(path, results):
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else None,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"meta": meta, "groups": results}, f, indent=1)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
