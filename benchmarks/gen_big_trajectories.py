"""Writes a large trajectories_step_N.json of FORMAT.md shape, fast (string templates, not dicts).

    python benchmarks/gen_big_trajectories.py OUT.json --mb 100 [--tokens 2000] [--lean] [--seed 0]

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

WORDS = [" the", " answer", " is", " we", " get", " so", " Let", " me", " check", ".", ",", "\n", " 12", " *",
         " 7", " =", " 84", " Wait", " but", " therefore", " x", " +", " 2", " (", ")", " step", "\t", ""]


def token_json(text, ent, hi, tid, prompt, lean=False):
    t = json.dumps(text)
    if lean:
        return f'{{"text":{t},"high_entropy":{"true" if hi else "false"},"entropy_score":{ent:.4f}}}'
    if prompt:
        return f'{{"text":{t},"high_entropy":false,"entropy_score":null,"prompt":true,"id":{tid}}}'
    return (f'{{"text":{t},"high_entropy":{"true" if hi else "false"},"entropy_score":{ent:.4f},'
            f'"id":{tid},"logprob":{-ent * 0.4 - 0.01:.4f}}}')


def record(rnd, step, i, n_tokens, tau=1.2, lean=False):
    prompt = [rnd.choice(WORDS) for _ in range(40)]
    resp = [(rnd.choice(WORDS), rnd.random() ** 2 * 3.0) for _ in range(n_tokens)]
    ptoks = ",".join(token_json(w, 0, False, 100 + j, True) for j, w in enumerate(prompt))
    rtoks = ",".join(token_json(w, e, e >= tau, 200 + j, False, lean) for j, (w, e) in enumerate(resp))
    ptext, rtext = "".join(prompt), "".join(w for w, _ in resp)
    if lean:
        return (f'{{"global_step":{step},"experience_index":{i // 8},"sample_in_exp":{i % 8},'
                f'"pure_generated_tokens":[{rtoks}],"prompt_text":{json.dumps(ptext)},'
                f'"advantages":{rnd.uniform(-1, 1):.4f},"return":{rnd.uniform(-1, 1):.4f},'
                f'"info":{{"reward":{float(rnd.random() > 0.5)},"response_length":{n_tokens}}}}}')
    return (f'{{"global_step":{step},"experience_index":{i // 8},"sample_in_exp":{i % 8},"group_index":{i // 8},'
            f'"generated_tokens":[{ptoks},{rtoks}],"pure_generated_tokens":[{rtoks}],'
            f'"generated_text":{json.dumps(ptext + rtext)},"pure_generated_text":{json.dumps(rtext)},'
            f'"prompt_text":{json.dumps(ptext)},"advantages":{rnd.uniform(-1, 1):.4f},"return":{rnd.uniform(-1, 1):.4f},'
            f'"high_entropy_threshold":{tau},"high_entropy_token_ratio":0.2,'
            f'"info":{{"reward":{float(rnd.random() > 0.5)},"response_length":{n_tokens},"kl":{rnd.random() * 0.01:.5f}}}}}')


def generate(path, mb, n_tokens=2000, step=1, seed=0, lean=False):
    """Writes the file (atomically) and returns the number of trajectories in it."""
    rnd = random.Random(seed)
    limit, size, n = mb * 1_000_000, 1, 0
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        while size < limit:
            r = record(rnd, step, n, n_tokens, lean=lean)
            f.write(("," if n else "") + r)
            size += len(r) + 1
            n += 1
        f.write("]")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lean", action="store_true")
    a = ap.parse_args()
    print(generate(a.out, a.mb, a.tokens, seed=a.seed, lean=a.lean), "trajectories")
