"""Hostile inputs of issue 8 (section 3): peak memory and time of each, on this checkout's code and
on a baseline (by default the code before the bounded readers), in the same run.

    python benchmarks/bench_hostile.py                      # baseline: git merge-base HEAD main
    python benchmarks/bench_hostile.py --baseline-rev fbd758c --cap-gib 4 --timeout 30

Each case runs in a fresh process under an address-space limit (--cap-gib, so that a reader that
does not bound itself stops there instead of taking the shared machine's memory) and a timeout;
peak RSS is the child's own (getrusage via wait4). An outcome "MemoryError at the cap" means the
code would have kept growing; "timeout" that it would have kept waiting.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUN = r"""
import resource, sys
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
if sys.argv[2] == "save_step":
    from openrlhf_ext.trajectory import TrajectorySaver
    from openrlhf_ext.trajectory.toy import toy_experience, toy_tokenizer
    tok = toy_tokenizer()
    exp = toy_experience(tok, ["1+1="], ["22"], rewards=[1.0])
    exp.sequences[0, -1] = 10**8
    entry = TrajectorySaver(sys.argv[3], tok, num_to_save=1, strict=True).save_step(1, [exp])
    print("saved step", entry["global_step"])
    sys.exit(0)
from openrlhf_ext.trajectory.tools.cli import main
sys.exit(main(sys.argv[2:]))
"""


def make_inputs(root: Path) -> dict:
    """The hostile inputs, each in a run folder of its own next to one good step file (FORMAT.md's
    shape, so that a baseline that checks strictly reads on to the hostile file)."""
    tokens = [{"text": " 4", "high_entropy": True, "entropy_score": 1.0}]
    good = json.dumps([{"global_step": 1, "experience_index": 0, "sample_in_exp": 0, "generated_tokens": tokens,
                        "pure_generated_tokens": tokens, "generated_text": " 4", "pure_generated_text": " 4",
                        "advantages": 0.0, "return": 0.0, "info": {"reward": 1.0, "response_length": 1}}]).encode()

    def run(name):
        folder = root / name
        folder.mkdir()
        (folder / "trajectories_step_1.json").write_bytes(good)
        return folder

    bomb = run("bomb")
    (bomb / "trajectories_step_2.json.gz").write_bytes(gzip.compress(bytes(64 << 20), 9) * 80)  # 5 GiB of zeros
    npz = root / "npz" / "steps"
    npz.mkdir(parents=True)
    with zipfile.ZipFile(npz / "step_000001.npz", "w") as z:
        for key, dtype, shape in (("entropies", "<f2", (1, 10**9)), ("response_mask", "|b1", (1, 10**9)),
                                  ("responses", "<i4", (1, 10**9)), ("response_index", "<i4", (1,))):
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
            z.writestr(key + ".npy", header.getvalue() + b"\0" * 64)
    sys.path.insert(0, str(REPO))
    from openrlhf_ext.trajectory.toy import toy_tokenizer

    toy_tokenizer().save(str(root / "tokenizer.json"))
    fifo, zero, steps = run("fifo"), run("zero"), run("steps")
    rollouts = root / "rollouts"
    rollouts.mkdir()
    (rollouts / "1.jsonl").write_text(json.dumps({"input": "1+1=", "output": " 2", "score": 1.0, "step": 1}) + "\n")
    os.mkfifo(fifo / "manifest.jsonl")
    (zero / "manifest.jsonl").symlink_to("/dev/zero")
    return {
        "gzip bomb (5 MB -> 5 GiB): validate": ["validate", bomb],
        "gzip bomb: stats": ["stats", bomb],
        "gzip bomb: report": ["report", bomb, "-o", root / "bomb.html"],
        "npz declaring 3 x (1, 1e9): convert": ["convert", root / "npz", "-o", root / "npz_out", "--tokenizer",
                                                root / "tokenizer.json"],
        "token id 10^8 in sequences: save_step": ["save_step", root / "oov"],
        "--steps 1-99999999999: report": ["report", steps, "-o", root / "steps.html", "--steps", "1-99999999999"],
        "--steps 1-99999999999: convert": ["convert", rollouts, "-o", root / "steps_out", "--steps", "1-99999999999"],
        "FIFO manifest: validate": ["validate", fifo],
        "/dev/zero manifest: stats": ["stats", zero],
    }


def measure(code_dir: Path, argv, cap: int, timeout: float) -> tuple[float, float, str]:
    """(peak RSS MiB, seconds, outcome) of one case run on the code in `code_dir`."""
    env = dict(os.environ, PYTHONPATH=str(code_dir), MALLOC_ARENA_MAX="2")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(cap), *map(str, argv)], cwd=code_dir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - started > timeout:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            return usage.ru_maxrss / 1024, timeout, "timeout (killed)"
        time.sleep(0.05)
    seconds = time.monotonic() - started
    err = proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if "MemoryError" in err:
        outcome = f"MemoryError at the {cap >> 30} GiB cap"
    elif "Traceback" in err:
        outcome = "traceback: " + err.strip().splitlines()[-1][:70]
    else:
        said = [x for x in err.splitlines() if x.strip()] or [x for x in proc.stdout.read().splitlines() if x.strip()]
        outcome = f"exit {code}: " + (said[0].replace(str(Path(argv[1]).parent), "…")[:110] if said else "")
    return usage.ru_maxrss / 1024, seconds, outcome


def baseline_checkout(rev: str, into: Path) -> None:
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default=None, help="the baseline's commit (default: git merge-base HEAD main)")
    parser.add_argument("--cap-gib", type=float, default=4.0, help="address-space limit of each case (default 4)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a case is killed (default 30)")
    args = parser.parse_args()
    rev = args.baseline_rev or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO, capture_output=True,
                                              text=True, check=True).stdout.strip()
    cap = int(args.cap_gib * (1 << 30))
    with tempfile.TemporaryDirectory() as tmp:
        base, inputs = Path(tmp) / "baseline", Path(tmp) / "inputs"
        base.mkdir()
        inputs.mkdir()
        baseline_checkout(rev, base)
        print(f"baseline: {rev[:10]}; this checkout: {REPO}; cap {args.cap_gib:g} GiB, timeout {args.timeout:g} s\n")
        print("| case | baseline: peak RSS, time, outcome | this checkout: peak RSS, time, outcome |")
        print("|---|---|---|")
        for case, argv in make_inputs(inputs).items():
            cells = []
            for code_dir in (base, REPO):
                rss, seconds, outcome = measure(code_dir, argv, cap, args.timeout)
                cells.append(f"{rss:,.0f} MiB, {seconds:.1f} s, {outcome}")
                for leftover in ("npz_out", "steps_out", "oov", "bomb.html", "steps.html"):  # each run writes afresh
                    subprocess.run(["rm", "-rf", str(inputs / leftover)])
            print(f"| {case} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
