"""Writes a large trajectories_step_N.json of FORMAT.md shape, fast (string templates, not dicts).

    python benchmarks/gen_big_trajectories.py OUT.json --mb 100 [--tokens 2000] [--lean] [--seed 0]
    python benchmarks/gen_big_trajectories.py RUN_DIR --run-steps 40 --mb 50 --tokens 4000

With --run-steps, RUN_DIR becomes a run's trajectories/ folder in format version 2: that many
step files of --mb each (rollout_logprob on every response token, 5 alternatives on the marked
ones, a prompt_id per group), manifest.jsonl (entropy statistics and histogram, file_bytes,
fork_words, logprob_mismatch, computed from what was written) and summary.json.

Each trajectory has `--tokens` response tokens (id, logprob, entropy, high-entropy mark for the
top 20%) and a 40-token prompt; trajectories are added until the file reaches `--mb` megabytes.
A full record holds every response token twice (generated_tokens and pure_generated_tokens), so
100 MB is about 280 trajectories of 2,000 tokens. `--lean` writes what lighter savers write
(pure_generated_tokens only; text, high_entropy, entropy_score per token): 100 MB is then about
850 trajectories of 2,000 tokens.
"""
import argparse
import json
import os
import random
import time
from collections import Counter

import numpy as np

WORDS = [" the", " answer", " is", " we", " get", " so", " Let", " me", " check", ".", ",", "\n", " 12", " *",
         " 7", " =", " 84", " Wait", " but", " therefore", " x", " +", " 2", " (", ")", " step", "\t", ""]


WORD_JSON = {w: json.dumps(w) for w in WORDS}


def v2_extra(rnd, tid, lp, hi, stats):
    """The v2 keys of a response token: rollout_logprob (the trainer's logprob plus a small
    disagreement), and on a marked token its 5 alternatives, most probable first."""
    d = rnd.gauss(0, 0.01)
    stats["deltas"].append(abs(d))
    out = f',"rollout_logprob":{lp - d:.5f}'
    if hi:
        lps = sorted((-rnd.random() * 3 for _ in range(5)), reverse=True)
        alts = ",".join(f'{{"id":{tid + k},"text":{WORD_JSON[rnd.choice(WORDS)]},"logprob":{x:.5f}}}' for k, x in enumerate(lps))
        out += f',"alternatives":[{alts}]'
    return out


def token_json(text, ent, hi, tid, prompt, lean=False, rnd=None, stats=None):
    t = WORD_JSON.get(text) or json.dumps(text)
    if lean:
        return f'{{"text":{t},"high_entropy":{"true" if hi else "false"},"entropy_score":{ent:.4f}}}'
    if prompt:
        return f'{{"text":{t},"high_entropy":false,"entropy_score":null,"prompt":true,"id":{tid}}}'
    lp = round(-ent * 0.4 - 0.01, 4)
    extra = v2_extra(rnd, tid, lp, hi, stats) if stats is not None else ""
    return (f'{{"text":{t},"high_entropy":{"true" if hi else "false"},"entropy_score":{ent:.4f},'
            f'"id":{tid},"logprob":{lp:.4f}{extra}}}')


def record(rnd, step, i, n_tokens, tau=1.2, lean=False, stats=None):
    """One record's JSON; with `stats` (a dict of lists) it is a v2 record, and the response's
    entropies, marked texts and |mismatch| go into stats for the manifest."""
    prompt = [rnd.choice(WORDS) for _ in range(40)]
    resp = [(rnd.choice(WORDS), rnd.random() ** 2 * 3.0) for _ in range(n_tokens)]
    ptoks = ",".join(token_json(w, 0, False, 100 + j, True) for j, w in enumerate(prompt))
    rtoks = ",".join(token_json(w, e, e >= tau, 200 + j, False, lean, rnd, stats) for j, (w, e) in enumerate(resp))
    ptext, rtext = "".join(prompt), "".join(w for w, _ in resp)
    reward = float(rnd.random() > 0.5)
    v2 = ""
    if stats is not None:
        stats["ent"].extend(e for _, e in resp)
        stats["forks"].update(w for w, e in resp if e >= tau)
        stats["reward"].append(reward)
        v2 = '"prompt_id":"p-%d-%d",' % (step, i // 8)
    if lean:
        return (f'{{"global_step":{step},"experience_index":{i // 8},"sample_in_exp":{i % 8},'
                f'"pure_generated_tokens":[{rtoks}],"prompt_text":{json.dumps(ptext)},'
                f'"advantages":{rnd.uniform(-1, 1):.4f},"return":{rnd.uniform(-1, 1):.4f},'
                f'"info":{{"reward":{float(rnd.random() > 0.5)},"response_length":{n_tokens}}}}}')
    return (f'{{"global_step":{step},"experience_index":{i // 8},"sample_in_exp":{i % 8},"group_index":{i // 8},{v2}'
            f'"generated_tokens":[{ptoks},{rtoks}],"pure_generated_tokens":[{rtoks}],'
            f'"generated_text":{json.dumps(ptext + rtext)},"pure_generated_text":{json.dumps(rtext)},'
            f'"prompt_text":{json.dumps(ptext)},"advantages":{rnd.uniform(-1, 1):.4f},"return":{rnd.uniform(-1, 1):.4f},'
            f'"high_entropy_threshold":{tau},"high_entropy_token_ratio":0.2,'
            f'"info":{{"reward":{reward},"response_length":{n_tokens},"kl":{rnd.random() * 0.01:.5f}}}}}')


def generate(path, mb, n_tokens=2000, step=1, seed=0, lean=False, stats=None):
    """Writes the file (atomically) and returns the number of trajectories in it."""
    rnd = random.Random(seed)
    limit, size, n = mb * 1_000_000, 1, 0
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        while size < limit:
            r = record(rnd, step, n, n_tokens, lean=lean, stats=stats)
            f.write(("," if n else "") + r)
            size += len(r) + 1
            n += 1
        f.write("]")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def manifest_line(step, path, n, stats, tau=1.2):
    """The step's manifest line (FORMAT.md, version 2 keys included) from what was written."""
    ent, deltas = np.asarray(stats["ent"]), np.asarray(stats["deltas"])
    counts, edges = np.histogram(ent, bins=30)
    pct = {f"p{q}": float(np.percentile(ent, q)) for q in (50, 80, 95)}
    return {"global_step": step, "file": os.path.basename(path), "num_responses": n, "num_saved": n,
            "num_response_tokens": int(ent.size), "high_entropy_token_ratio": 0.2, "high_entropy_threshold": tau,
            "entropy": {"mean": float(ent.mean()), "std": float(ent.std()), "min": float(ent.min()), "max": float(ent.max()), **pct},
            "reward_mean": float(np.mean(stats["reward"])), "hist_edges": edges.tolist(), "hist_counts": counts.tolist(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "file_bytes": os.path.getsize(path),
            "fork_words": [[w, c] for w, c in stats["forks"].most_common(50)],
            "logprob_mismatch": {"mean_abs": float(deltas.mean()), "p95_abs": float(np.percentile(deltas, 95)), "max_abs": float(deltas.max())}}


def write_atomic(path, text):
    with open(f"{path}.tmp", "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f"{path}.tmp", path)


def generate_run(folder, steps, mb, n_tokens=4000, seed=0):
    """A run's trajectories/ folder in format version 2: `steps` step files of `mb` MB, the
    manifest and the summary. Returns the number of trajectories per step."""
    os.makedirs(folder, exist_ok=True)
    lines, n = [], 0
    for step in range(1, steps + 1):
        path = os.path.join(folder, f"trajectories_step_{step}.json")
        stats = {"ent": [], "deltas": [], "forks": Counter(), "reward": []}
        n = generate(path, mb, n_tokens, step=step, seed=seed + step, stats=stats)
        lines.append(json.dumps(manifest_line(step, path, n, stats)) + "\n")
    write_atomic(os.path.join(folder, "manifest.jsonl"), "".join(lines))
    write_atomic(os.path.join(folder, "summary.json"), json.dumps({"format_version": 2, "latest_step": steps, "num_steps_written": steps}))
    return n


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lean", action="store_true")
    ap.add_argument("--run-steps", type=int, default=0, help="write a v2 run folder of this many steps instead")
    a = ap.parse_args()
    if a.run_steps:
        print(generate_run(a.out, a.run_steps, a.mb, a.tokens, seed=a.seed), "trajectories per step")
    else:
        print(generate(a.out, a.mb, a.tokens, seed=a.seed, lean=a.lean), "trajectories")
