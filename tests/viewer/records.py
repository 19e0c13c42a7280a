"""Builders of trajectory files in the shape of shared/FORMAT.md, for the viewer's browser tests.

The tests write their own files: a step is a list of responses, each a list of
(text, entropy) pairs; the high-entropy marks are computed like the saver does (top ratio of the
step's finite entropies, ties at the threshold all marked).
"""
import gzip
import json
import math
import re
import zlib


def mark_step(records, ratio=0.2):
    """Sets `high_entropy` on every response token of the step's records; returns the threshold."""
    ents = [t["entropy_score"] for r in records for t in r["pure_generated_tokens"]
            if isinstance(t.get("entropy_score"), (int, float)) and math.isfinite(t["entropy_score"])]
    if not ents:
        return None
    k = max(1, math.ceil(round(ratio * len(ents), 9)))
    tau = sorted(ents, reverse=True)[k - 1]
    for r in records:
        r["high_entropy_threshold"] = tau
        r["high_entropy_token_ratio"] = ratio
        for toks in (r["generated_tokens"], r["pure_generated_tokens"]):
            for t in toks:
                e = t.get("entropy_score")
                t["high_entropy"] = bool(not t.get("prompt") and isinstance(e, (int, float)) and e >= tau)
    return tau


def make_record(step, index, prompt, response, *, group_index=None, reward=0.0, advantages=0.0,
                ret=0.0, info=None, sample_in_exp=None):
    """prompt: list of token texts; response: list of (text, entropy) or (text, entropy, logprob)."""
    prompt_toks = [{"text": t, "high_entropy": False, "entropy_score": None, "prompt": True, "id": 1000 + i}
                   for i, t in enumerate(prompt)]
    resp_toks = []
    for i, item in enumerate(response):
        text, ent = item[0], item[1]
        tok = {"text": text, "high_entropy": False, "entropy_score": ent, "id": 2000 + i}
        if len(item) > 2:
            tok["logprob"] = item[2]
        resp_toks.append(tok)
    rec = {
        "global_step": step,
        "experience_index": 0,
        "sample_in_exp": index if sample_in_exp is None else sample_in_exp,
        "generated_tokens": prompt_toks + [dict(t) for t in resp_toks],
        "pure_generated_tokens": resp_toks,
        "generated_text": "".join(prompt) + "".join(r[0] for r in response),
        "pure_generated_text": "".join(r[0] for r in response),
        "prompt_text": "".join(prompt),
        "advantages": advantages,
        "return": ret,
        "info": {"reward": reward, "response_length": len(response), **(info or {})},
    }
    if group_index is not None:
        rec["group_index"] = group_index
    return rec


def write_json(path, obj, gz=False, **kw):
    data = json.dumps(obj, **kw).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def math_step(step, n_groups=2, per_group=3, seed=0):
    """A small realistic step: GRPO groups of math answers with varied entropies."""
    import random
    rnd = random.Random(seed + step)
    prompts = ["Solve: 12*7 = ?\n", "What is 15 + 27?\n", "Compute 9 squared.\n", "Is 91 prime?\n"]
    words = ["Let", " me", " think", ".", " The", " answer", " is", " 84", ".", "\n", "Wait", ",",
             " so", " 12", " *", " 7", " =", " 60", " +", " 24", "\t", "", " therefore", " we", " get"]
    records = []
    idx = 0
    for g in range(n_groups):
        prompt = prompts[g % len(prompts)]
        ptoks = re.findall(r" ?[^\s]+|\n", prompt)
        for j in range(per_group):
            n = rnd.randint(25, 60)
            resp = []
            for _ in range(n):
                w = rnd.choice(words)
                e = round(rnd.random() ** 2 * 3.0, 4)
                resp.append((w, e, round(-e * 0.4 - 0.01, 4)))
            records.append(make_record(step, idx, ptoks, resp, group_index=g,
                                       reward=float(rnd.random() > 0.5), advantages=round(rnd.uniform(-1, 1), 4),
                                       ret=round(rnd.uniform(-1, 1), 4), info={"kl": round(rnd.random() * 0.01, 5), "truncated": False}))
            idx += 1
    mark_step(records, 0.2)
    return records


def write_gzip_bomb(path, n_bytes, chunk=1 << 24):
    """A .json.gz of `n_bytes` zeros, streamed through zlib (never all in memory): about 1 KB of
    gzip per MB it expands to."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)          # wbits 31: the gzip container
    zeros = bytes(chunk)
    with open(path, "wb") as f:
        for _ in range(n_bytes // chunk):
            f.write(z.compress(zeros))
        f.write(z.compress(bytes(n_bytes % chunk)) + z.flush())
    return path


LOREM = "lorem ipsum dolor sit amet, "


def long_token_step(step=1, n_chars=5_000_000):
    """One response whose middle token is `n_chars` characters of words and spaces (what a
    broken converter writes when it puts a whole text in one token)."""
    text = (LOREM * (n_chars // len(LOREM) + 1))[:n_chars]
    recs = [make_record(step, 0, ["P"], [(" start", 0.5), (text, 2.0), (" end", 0.1)])]
    mark_step(recs, 0.34)
    return recs, text


# ----------------------------------------------------------------------------- format version 2
def with_v2(rec, prompt_id=None, rollout=None, alternatives=None, probe=None):
    """Adds version 2 fields (shared/FORMAT.md) to a make_record record, in both token lists.

    rollout(i, token) -> the rollout_logprob of response token i; alternatives: {i: [(id, text,
    logprob), ...]} for response token i."""
    n_prompt = len(rec["generated_tokens"]) - len(rec["pure_generated_tokens"])
    for toks in (rec["pure_generated_tokens"], rec["generated_tokens"][n_prompt:]):
        for i, tok in enumerate(toks):
            if rollout is not None:
                tok["rollout_logprob"] = rollout(i, tok)
            if alternatives and i in alternatives:
                tok["alternatives"] = [{"id": a, "text": t, "logprob": lp} for a, t, lp in alternatives[i]]
    if prompt_id is not None:
        rec["prompt_id"] = prompt_id
    if probe is not None:
        rec["probe"] = probe
    return rec


def manifest_line(step, records, file=None, **extra):
    """A step's manifest line as the saver writes it, v2 keys computed here from the records:
    fork_words (most frequent marked texts), logprob_mismatch (when rollout log-probs are there)."""
    toks = [t for r in records for t in r["pure_generated_tokens"]]
    ents = [t["entropy_score"] for t in toks if isinstance(t.get("entropy_score"), (int, float))]
    forks = {}
    for t in toks:
        if t.get("high_entropy"):
            forks[t["text"]] = forks.get(t["text"], 0) + 1
    line = {"global_step": step, "file": file or f"trajectories_step_{step}.json", "num_responses": len(records),
            "num_saved": len(records), "num_response_tokens": len(toks),
            "entropy": {"mean": sum(ents) / len(ents)} if ents else {},
            "reward_mean": sum(r["info"]["reward"] for r in records) / max(1, len(records)),
            "fork_words": sorted(forks.items(), key=lambda kv: -kv[1])[:50]}
    deltas = sorted(abs(t["logprob"] - t["rollout_logprob"]) for t in toks
                    if isinstance(t.get("logprob"), float) and isinstance(t.get("rollout_logprob"), float))
    if deltas:
        line["logprob_mismatch"] = {"mean_abs": sum(deltas) / len(deltas),
                                    "p95_abs": deltas[max(0, math.ceil(0.95 * len(deltas)) - 1)], "max_abs": deltas[-1]}
    line.update(extra)
    return line


def write_run(folder, steps, probes=None, manifest=True, summary_version=2):
    """A run folder: {step: records} as trajectories_step_N.json, {step: records} as probes_step_N.json,
    manifest.jsonl (one line per step, probe_file where there is one) and summary.json."""
    folder.mkdir(parents=True, exist_ok=True)
    probes = probes or {}
    lines = []
    for step, recs in sorted(steps.items()):
        write_json(folder / f"trajectories_step_{step}.json", recs)
        extra = {"probe_file": f"probes_step_{step}.json"} if step in probes else {}
        lines.append(manifest_line(step, recs, file_bytes=(folder / f"trajectories_step_{step}.json").stat().st_size, **extra))
    for step, recs in probes.items():
        write_json(folder / f"probes_step_{step}.json", recs)
    if manifest:
        (folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_json(folder / "summary.json", {"format_version": summary_version, "latest_step": max(steps)})
    return folder


def probe_step(step, prompts, samples=2, seed=0):
    """Responses to fixed probe prompts at one step: {prompt_id: prompt text}, `samples` each;
    the answers (and so their fork words and rewards) change with the step."""
    import random
    rnd = random.Random(seed * 1000 + step)
    recs = []
    for g, (pid, prompt) in enumerate(prompts.items()):
        for j in range(samples):
            words = [" Wait" if step < 3 else " So", ",", f" {step}", " is", f" answer{j}", "."]
            resp = [(w, round(2.5 - k * 0.3 + rnd.random() * 0.1, 4), -0.1 - k * 0.05) for k, w in enumerate(words)]
            rec = make_record(step, len(recs), [prompt], resp, group_index=g, reward=float(j == 0 and step >= 3))
            recs.append(with_v2(rec, prompt_id=pid, probe=True))
    mark_step(recs, 0.2)
    return recs
