"""Peak memory of `openrlhf-traj convert` on a large npz entropy trace: streaming vs. load-all.

The issue's target is a trace of 100 steps of 512 responses x 4,096 tokens converting while
holding no more than one step in memory. This builds such a folder (scaled down by default:
10 steps of 512 x 4,096; `--full` for 100 steps), then converts it twice, each in a fresh Python
process so that peak RSS (resource.getrusage ru_maxrss) belongs to that converter alone:

- streaming: `openrlhf_ext.trajectory.tools.convert.convert`, one step's arrays and output at a time;
- naive (the baseline): loads every step's arrays first, then builds each step's records as a
  list of dicts and serialises the list (files.dumps_records), the obvious way to write it; it
  writes the same step files and manifest statistics (no summary.json).

Both print peak RSS, the RSS right after imports (torch and transformers alone are a few hundred
MB), the growth above it, and the time. `--tracemalloc` also reports the traced Python/numpy heap
peak (slower). The tokenizer is a byte-level BPE trained here with `tokenizers`: nothing is
downloaded.

    python benchmarks/bench_convert.py                      # 10 x 512 x 4096, 32 saved per step
    python benchmarks/bench_convert.py --full               # 100 steps (about 1.4 GB of npz)
    python benchmarks/bench_convert.py --steps 4 --responses 128 --length 1024   # quick look
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    # Current RSS from /proc (Linux); ru_maxrss gives only the peak.
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = ["The answer is 84. Let me think step by step: wait, actually, first check 12 * 7.",
              "def f(x):\n    return x + 1\n", "数学问题 café 😀 🎉 so the result is"] * 50
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]))
    path = folder / "tokenizer.json"
    tok.save(str(path))
    return path


def build_trace(folder: Path, num_steps: int, responses: int, length: int, vocab: int) -> None:
    """steps/step_NNNNNN.npz in the trace layout, random but shaped like real rollouts."""
    steps = folder / "steps"
    steps.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for step in range(1, num_steps + 1):
        path = steps / f"step_{step:06d}.npz"
        if path.exists():
            continue
        lengths = rng.integers(length // 4, length + 1, responses)
        mask = np.arange(length)[None, :] < lengths[:, None]  # (R, L) bool
        # Entropy of a real rollout: mostly low, a long tail of forking tokens.
        entropies = rng.gamma(0.6, 0.8, (responses, length)).astype(np.float16)  # (R, L)
        ids = rng.integers(0, vocab, (responses, length), dtype=np.int32)  # (R, L)
        ids[~mask] = 0
        np.savez_compressed(
            path, entropies=entropies, response_mask=mask, responses=ids,
            response_index=np.arange(responses, dtype=np.int32),
            rewards=rng.random(responses).astype(np.float32),
            uid=np.repeat(np.arange(responses // 8 + 1), 8)[:responses].astype(np.int64),
        )
        print(f"  wrote {path.name} ({path.stat().st_size / 2**20:.1f} MiB)", flush=True)


def naive_convert(src: Path, out_dir: Path, tokenizer_path: str, ratio: float, limit: int | None) -> None:
    """The baseline: every step loaded first, then per step its records built as a list of dicts,
    written with dumps_records, and its manifest entry; the same output as convert()."""
    from openrlhf_ext.trajectory.files import atomic_write_bytes, dumps_records, step_file_name, upsert_manifest
    from openrlhf_ext.trajectory.manifest_entry import manifest_entry
    from openrlhf_ext.trajectory.tools.convert import load_tokenizer
    from openrlhf_ext.trajectory.tools.convert_npz import find_npz_steps, npz_step_records, read_npz_step

    tokenizer = load_tokenizer(tokenizer_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = [read_npz_step(path, step) for step, path in find_npz_steps(src / "steps")]
    for step in loaded:
        records, info = npz_step_records(step, tokenizer, ratio, "step", limit)
        records = list(records)
        name = step_file_name(step.global_step)
        atomic_write_bytes(out_dir / name, dumps_records(records))
        upsert_manifest(out_dir / "manifest.jsonl",
                        manifest_entry(step.global_step, num_saved=len(records), ratio=ratio, **info))


def child(args) -> None:
    """Run one converter in this (fresh) process and print its measurements as JSON."""
    import tracemalloc

    import torch  # noqa: F401  (imported by the converter anyway: count it in the baseline)
    import transformers  # noqa: F401

    from openrlhf_ext.trajectory.tools.convert import convert

    baseline = rss_mb()
    if args.tracemalloc:
        tracemalloc.start()
    start = time.perf_counter()
    if args.child == "streaming":
        convert(args.src, args.out, tokenizer=args.tokenizer, high_entropy_token_ratio=0.2,
                num_trajectories_per_step=args.num_trajectories_per_step, overwrite=True, progress=False)
    else:
        naive_convert(Path(args.src), Path(args.out), args.tokenizer, 0.2, args.num_trajectories_per_step)
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else None
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": baseline, "seconds": seconds,
                      "traced_peak_mb": traced}))


def run_child(kind: str, args, src: Path, tokenizer: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--src", str(src), "--out", str(out),
           "--tokenizer", str(tokenizer)]
    if args.num_trajectories_per_step:
        cmd += ["--num_trajectories_per_step", str(args.num_trajectories_per_step)]
    if args.tracemalloc:
        cmd.append("--tracemalloc")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} converter failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--responses", type=int, default=512)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--full", action="store_true", help="100 steps of 512 x 4,096 (the issue's size)")
    parser.add_argument("--num_trajectories_per_step", type=int, default=32,
                        help="responses written per step (0: all; marks always use all)")
    parser.add_argument("--workdir", default=None, help="keep the trace here (default: a temp folder, removed)")
    parser.add_argument("--tracemalloc", action="store_true", help="also report tracemalloc's peak (slower)")
    parser.add_argument("--child", choices=["streaming", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.num_trajectories_per_step == 0:
        args.num_trajectories_per_step = None
    if args.child:
        child(args)
        return
    if args.full:
        args.steps, args.responses, args.length = 100, 512, 4096

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        work.mkdir(parents=True, exist_ok=True)
        tokenizer = build_tokenizer(work)
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(tokenizer)).get_vocab_size()
        print(f"trace: {args.steps} steps x {args.responses} responses x {args.length} tokens "
              f"(vocab {vocab}) in {work}", flush=True)
        build_trace(work / "trace", args.steps, args.responses, args.length, vocab)
        trace_mb = sum(p.stat().st_size for p in (work / "trace" / "steps").glob("*.npz")) / 2**20
        step_arrays_mb = args.responses * args.length * (2 + 1 + 4) / 2**20
        print(f"trace on disk: {trace_mb:.0f} MiB; one step's arrays as stored: {step_arrays_mb:.0f} MiB, "
              f"as converted (float32 entropies): {args.responses * args.length * (4 + 1 + 4) / 2**20:.0f} MiB")
        print(f"writing {args.num_trajectories_per_step or 'all'} trajectories per step\n", flush=True)
        results = {}
        for kind in ("streaming", "naive"):
            results[kind] = run_child(kind, args, work / "trace", tokenizer, work / f"out_{kind}")
            r = results[kind]
            traced = f", tracemalloc peak {r['traced_peak_mb']:.0f} MiB" if r["traced_peak_mb"] is not None else ""
            print(f"{kind:>9}: peak RSS {r['peak_rss_mb']:7.0f} MiB (after imports {r['baseline_rss_mb']:.0f} MiB, "
                  f"growth {r['peak_rss_mb'] - r['baseline_rss_mb']:6.0f} MiB){traced}, {r['seconds']:6.1f} s",
                  flush=True)
        naive_files = sorted((work / "out_naive").glob("trajectories_step_*.json"))
        same = len(naive_files) == args.steps and all(
            json.loads(p.read_bytes()) == json.loads((work / "out_streaming" / p.name).read_bytes())
            for p in naive_files)
        grow = {k: v["peak_rss_mb"] - v["baseline_rss_mb"] for k, v in results.items()}
        print(f"\nstreaming grows {grow['streaming']:.0f} MiB over its imports, naive {grow['naive']:.0f} MiB "
              f"({grow['naive'] / max(grow['streaming'], 1):.1f}x); same records in both outputs: {same}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
