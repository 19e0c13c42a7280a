"""token_entropy against the usual ways of computing it, float32, on the CPU or CUDA.

    python benchmarks/bench_token_entropy.py                  # CPU, vocab 32k and 152k
    python benchmarks/bench_token_entropy.py --quick          # smaller batches
    python benchmarks/bench_token_entropy.py --device cuda    # CUDA, 8192 x 152k (and 32k)

Compared in the same run: torch.distributions.Categorical(logits=x).entropy() (what most trainers
call), verl's formula logsumexp(x) - sum(softmax(x) * x) (verl.utils.torch_functional's
entropy_from_logits), a bare torch.logsumexp(x, -1) pass, and a bare x.sum(-1) pass (the
memory-bandwidth floor). Each method runs in its own subprocess, so "peak extra" is that process's
RSS high-water mark above the logits it was given (on CUDA: torch.cuda.max_memory_allocated above
the memory allocated with the logits). Error is the max abs difference from a float64 reference.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

METHODS = ["token_entropy", "categorical", "verl", "logsumexp", "sum"]
ENTROPY_METHODS = ("token_entropy", "categorical", "verl")


def verl_entropy(logits: torch.Tensor) -> torch.Tensor:
    """verl's entropy_from_logits: logsumexp - sum(softmax * logits)."""
    pd = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - torch.sum(pd * logits, dim=-1)


def run_method(method: str, n: int, vocab: int, repeats: int, device: str = "cpu") -> dict:
    from openrlhf_ext.trajectory import token_entropy

    torch.manual_seed(0)
    x = torch.randn(n, vocab, device=device).mul_(4.0)  # (N, V) in place: no temporary of the same size
    fns = {
        "token_entropy": lambda: token_entropy(x),
        "categorical": lambda: torch.distributions.Categorical(logits=x, validate_args=False).entropy(),
        "verl": lambda: verl_entropy(x),
        "logsumexp": lambda: torch.logsumexp(x, -1),
        "sum": lambda: x.sum(-1),
    }
    cuda = device == "cuda"
    if cuda:
        fns[method]()  # warm-up: kernels load, the caching allocator settles
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fns[method]()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    err = None
    if method in ENTROPY_METHODS:
        rows = slice(0, min(n, 64))
        z = x[rows].double()
        ref = -(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum(-1)
        err = (out[rows].double() - ref).abs().max().item()
    return {"seconds": min(times), "peak_extra_bytes": max(0, peak - before), "logits_bytes": x.numel() * 4, "max_error": err}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "N", "VOCAB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        method, n, vocab = args.one
        print(json.dumps(run_method(method, int(n), int(vocab), args.repeats, args.device)))
        return
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device here")
        shapes = [(8192, 32_000), (8192, 152_064)]
        where = torch.cuda.get_device_name()
    else:
        shapes = [(512, 32_000), (128, 152_064)] if args.quick else [(2048, 32_000), (512, 152_064)]
        where = f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, float32, {where}")
    print(f"{'vocab':>7} {'tokens':>6} {'method':>14} {'time ms':>9} {'vs Categorical':>15} {'peak extra':>11} {'% of logits':>11} {'max err':>9}")
    for n, vocab in shapes:
        results = {}
        for m in METHODS:
            cmd = [sys.executable, __file__, "--one", m, str(n), str(vocab), "--repeats", str(args.repeats),
                   "--device", args.device]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            results[m] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        base = results["categorical"]["seconds"]
        for m, r in results.items():
            err = "-" if r["max_error"] is None else f"{r['max_error']:.1e}"
            print(f"{vocab:>7} {n:>6} {m:>14} {r['seconds'] * 1e3:>9.1f} {base / r['seconds']:>14.1f}x "
                  f"{r['peak_extra_bytes'] / 2**20:>9.1f}MB {100 * r['peak_extra_bytes'] / r['logits_bytes']:>10.1f}% {err:>9}")


if __name__ == "__main__":
    main()
