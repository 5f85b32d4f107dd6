"""PyTorch's side of benches/ops.rs: the same composites on the same CPU shapes, written as timm and
PyTorch users write them, timed eagerly and under `torch.compile`.

    python scripts/bench-torch.py [--out FILE] [--filter REGEX] [--threads N] [--seconds S]

Every row carries the group id of the criterion group it stands beside
(`op/variant/size/dtype/device`), so scripts/bench-report can put the two side by side. For
each group the same Python function runs eagerly and compiled (`torch.compile(dynamic=False)`,
a fresh compilation per group): compilation and warm-up calls are excluded, then samples of
enough calls to last about 20 ms are timed until --seconds pass (at least 5 samples); the
median time per call is reported with every sample. Results are merged into FILE (by group
id), so a filtered run replaces only its rows.
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
    per = F.cross_entropy(logits, y, reduction="none", label_smoothing=eps)
    b = per.shape[0]
    k = math.floor(drop_share * b)
    if k == 0:
        return per.mean()
    _, idx = per.detach().topk(k, sorted=False)
    keep = torch.ones(b, device=per.device).index_fill(0, idx, 0.0)
    return (per * keep).sum() / (b - k)


def ce_mixed(logits, y_a, y_b, lam=0.3, eps=0.1):
    ce = lambda y: F.cross_entropy(logits, y, reduction="none", label_smoothing=eps)
    return (ce(y_a) * lam + ce(y_b) * (1 - lam)).mean()


def ce_plain(logits, y):
    return F.cross_entropy(logits, y, reduction="none").mean()


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


def gid(op, variant, shape, dtype=torch.float32):
    return f"{op}/{variant}/{'x'.join(map(str, shape))}/{DTYPES[dtype]}/cpu"


def cases():
    """(group ids, eager function, compiled-function source, argument factory) per composite.

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
            yield [gid("mixup", "perm", shape, dt)], mixup_perm, lambda a=args: (*a(), 0.37)
            yield [gid("mixup", "perm into buffer", shape, dt)], mixup_perm_into, \
                lambda a=args: (*(xp := a()), 0.37, torch.empty_like(xp[0]))
            yield [gid("mixup", "flip in place", shape, dt)], mixup_flip_, lambda a=args: (a()[0], 0.37)
    for b, c in ((128, 10), (128, 100), (1024, 1000), (4096, 1000)):
        def logits_y(b=b, c=c):
            torch.manual_seed(0)
            return torch.randn(b, c), torch.randint(c, (b,))
        yield ([gid("ce", "hlr r=0.1 eps=0.1, autograd", (b, c)), gid("ce", "hlr r=0.1 eps=0.1, dlogits", (b, c))],
               ce_hlr, logits_y)
        yield ([gid("ce", "mixed targets eps=0.1, autograd", (b, c))], ce_mixed,
               lambda f=logits_y: (*(ly := f()), ly[1].roll(1, 0)))
    def lm():
        torch.manual_seed(0)
        return torch.randn(4096, 8192), torch.randint(8192, (4096,))
    yield [gid("ce", "lm tokens, dlogits", (4096, 8192))], ce_plain, lm
    yield [gid("zero_counts", "resnet18 relu outputs", (128, 557056))], zero_counts, \
        lambda: (resnet18_activations(128),)
    n = sum(p.numel() for p in resnet18_params())
    yield [gid("dot_norms", "resnet18 params", (n,))], dot_norms, lambda: (resnet18_params(), resnet18_params())


# --- timing ----------------------------------------------------------------------------------------


def time_calls(f, args, seconds):
    """Median seconds per call over samples of calls lasting about SAMPLE_S; warm-up excluded."""
    for _ in range(3):
        f(*args)
    t = time.perf_counter()
    f(*args)
    one = max(time.perf_counter() - t, 1e-7)
    per_sample = max(1, int(SAMPLE_S / one))
    samples = []
    start = time.perf_counter()
    while len(samples) < 5 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        for _ in range(per_sample):
            f(*args)
        samples.append((time.perf_counter() - t) / per_sample)
    return statistics.median(samples), samples


def run_case(ids, fn, make_args, seconds):
    is_loss = fn.__name__.startswith("ce_")
    args = make_args()
    eager = backward_of(fn) if is_loss else fn
    torch._dynamo.reset()  # a fresh compilation per group: no recompile limit, no dynamic shapes
    compiled_fn = torch.compile(fn, dynamic=False)
    compiled = backward_of(compiled_fn) if is_loss else compiled_fn
    t = time.perf_counter()
    compiled(*args)
    compile_s = time.perf_counter() - t
    out = {}
    for name, f in (("eager", eager), ("compile", compiled)):
        med, samples = time_calls(f, args, seconds)
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
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # Inductor writes its thread count into the generated C++ (`omp parallel num_threads(N)`),
    # decided in its compile workers, not by this process's setting: pin it too.
    torch._inductor.config.cpp.threads = args.threads
    pattern = re.compile(args.filter)

    results = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f).get("groups", {})
    for ids, fn, make_args in cases():
        if not any(pattern.search(i) for i in ids):
            continue
        row = run_case(ids, fn, make_args, args.seconds)
        for i, r in row.items():
            results[i] = r
            print(f"{i}: eager {r['eager_ns'] / 1e6:.3f} ms, torch.compile {r['compile_ns'] / 1e6:.3f} ms "
                  f"(compiled in {r['compile_s']} s)", flush=True)

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "groups": results}, f, indent=1)
    print(f"wrote {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
