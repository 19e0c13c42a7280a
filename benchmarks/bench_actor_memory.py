"""Peak memory and time of the actor's forward: the chunked head against the full-logits path.

    python benchmarks/bench_actor_memory.py                       # CPU, fp32, 1x2048 and 4x4096
    python benchmarks/bench_actor_memory.py --shapes 1x2048 --max_gib 9 --rounds 2 --threads 1
    python benchmarks/bench_actor_memory.py --device cuda --dtype bf16 --preset qwen2.5-1.5b \\
        --shapes 8x4096 --gradient_checkpointing --max_gib 120
    python benchmarks/bench_actor_memory.py --exactness [--device cuda]   # errors against float64

A random-init model (default: a 1-layer Llama of Qwen's vocabulary, 151,936, hidden 64; the
logits' size is tokens x vocab whatever the hidden size) scores B x A response tokens through
`Actor(model, chunked=True)` (the new path) and `Actor(model, chunked=False)` (the model's full
logits, then log-softmax and entropy: the old forward), without grad and with forward + backward of
a loss that uses both log-probs and entropy. Each case runs in a fresh child process, so peaks do not
mix: the peak is the RSS high-water mark above the RSS at the start of the case (the model and the
inputs already built) on CPU, torch.cuda.max_memory_allocated above the allocated memory at the start
on CUDA. It is printed as a % of the full fp32 logits' size (tokens x vocab x 4 B). On CPU the
process's CPU time is printed beside the wall time: on a machine shared with other jobs it is the
steadier of the two.

A case whose predicted peak exceeds --max_gib is not run ("skipped: needs ~X GiB"); the child also
runs under RLIMIT_AS (its address space at start + --max_gib + 1 GiB) so a wrong prediction fails
the case instead of the machine. Time: the best of --repeats runs after one warm-up in each of
--rounds children per case (the paths alternate), and the ratio new / full when both ran.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

PRESETS = {
    # hidden, intermediate, layers, heads, kv heads, tied: the logits' size depends on the vocab only
    "tiny": dict(arch="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2, tie_word_embeddings=False),
    "qwen2.5-1.5b": dict(arch="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
}
PROMPT_LEN = 32
GiB = 2**30


def build_model(preset: str, vocab: int, dtype: torch.dtype, device: str, gradient_checkpointing: bool):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = dict(PRESETS[preset])
    arch = spec.pop("arch")
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    cfg = config_cls(vocab_size=vocab, max_position_embeddings=16384, use_cache=False, **spec)
    torch.manual_seed(0)
    with torch.device(device):
        model = model_cls(cfg).to(dtype)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def logits_bytes(batch: int, actions: int, vocab: int) -> int:
    return batch * actions * vocab * 4


def predicted_bytes(path: str, grad: bool, batch: int, actions: int, a) -> int:
    """A generous guess of the case's peak, to skip what cannot fit. The full path was measured at
    ~3.1x (no grad) and ~6.3x (grad) the fp32 logits. Either path also holds the decoder's
    activations (all layers' with grad, one layer's without or with checkpointing, and an attention
    matrix in case the attention kernel makes one), the parameters' gradients, and for the chunked
    one a few weight-sized float32 copies and gradients of the head."""
    spec = PRESETS[a.preset]
    h, inter, layers = spec["hidden_size"], spec["intermediate_size"], spec["num_hidden_layers"]
    tokens, seq = batch * (PROMPT_LEN + actions), PROMPT_LEN + actions
    per_layer = (24 * h + 8 * inter) * 4  # bytes per token of one layer's activations, float32
    keep = layers * per_layer if grad and not a.gradient_checkpointing else per_layer + layers * h * 4 * grad
    attention = batch * spec["num_attention_heads"] * seq * seq * 4
    params = (a.vocab * h * (1 if spec["tie_word_embeddings"] else 2) + layers * (4 * h * h + 3 * h * inter)) * 4
    common = tokens * keep + attention + params * grad + (512 << 20)
    logits = logits_bytes(batch, actions, a.vocab)
    if path == "full":
        return int(logits * (3.5 if not grad else 7.0)) + common
    return 4 * a.vocab * h * 4 + common


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(hwm_reset: bool) -> int:
    if hwm_reset:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(a) -> dict:
    """One case in this (child) process: build, measure the start, run warm-up + repeats."""
    from openrlhf_ext.models.actor import Actor

    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    model = build_model(a.preset, a.vocab, dtype, a.device, a.gradient_checkpointing)
    actor = Actor(model, chunked=a.path == "chunked")
    actor.train(a.grad)
    b, n = a.batch, a.actions
    g = torch.Generator().manual_seed(1)
    sequences = torch.randint(0, a.vocab, (b, PROMPT_LEN + n), generator=g).to(a.device)  # (B, S)
    attention_mask = torch.ones_like(sequences)  # (B, S)
    advantages = torch.randn(b, n, generator=g).to(a.device)  # (B, A)

    def step():
        with torch.set_grad_enabled(a.grad):
            log_probs, entropy = actor(sequences, attention_mask, n, temperature=a.temperature)
            if a.grad:
                # a policy-gradient term and an entropy bonus: gradients flow from both outputs
                loss = -(log_probs * advantages).mean() - 0.01 * entropy.mean()
                loss.backward()
        if a.device == "cuda":
            torch.cuda.synchronize()

    if a.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    else:
        # Address-space guard: a wrong prediction fails this case, not the machine.
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = vm + int((a.max_gib + 1) * GiB)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        start = rss_bytes()
        hwm = reset_peak_rss()
    times, cpu_times = [], []
    for i in range(1 + a.repeats):
        model.zero_grad(set_to_none=True)
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if i:  # the first run warms up
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    peak = (torch.cuda.max_memory_allocated() if a.device == "cuda" else peak_rss_bytes(hwm)) - start
    return {"seconds": min(times), "cpu_seconds": min(cpu_times), "peak_bytes": max(0, peak)}


def exactness(a) -> list[dict]:
    """The chunked head against a float64 recomputation on this device: max abs error of log-probs,
    entropies, top-5 log-probs and (abs, and relative to the largest entry) of the hidden states'
    and weight's gradients, for fp32 and bf16 inputs at two temperatures."""
    from openrlhf_ext.models.chunked_head import _mixed_mm_works, chunked_head

    dev = a.device
    n, h, vocab = (2048, 1536, a.vocab) if dev == "cuda" else (256, 64, 32_000)
    print(f"exactness vs float64 on {dev}: {n} tokens, hidden {h}, vocab {vocab}")
    print(f"{'dtype':>6} {'T':>4} {'GEMM':>12} {'log-prob':>9} {'entropy':>9} {'top-5':>9} "
          f"{'grad h':>9} {'(rel)':>8} {'grad W':>9} {'(rel)':>8}")
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for t in (0.6, 1.0):
            torch.manual_seed(0)
            hidden = torch.randn(n, h, device=dev).to(dtype).requires_grad_()
            weight = (torch.randn(vocab, h, device=dev) * (4 / h**0.5)).to(dtype).requires_grad_()  # logits ~ N(0, 16)
            labels = torch.randint(0, vocab, (n,), device=dev)
            g_lp, g_ent = torch.randn(n, device=dev), torch.randn(n, device=dev)
            out = chunked_head(hidden, weight, None, labels, temperature=t, top_k=5)
            ((out.log_probs * g_lp).sum() + (out.entropy * g_ent).sum()).backward()
            h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
            logp = torch.log_softmax(h64 @ w64.T / t, -1)
            lp, ent = logp.gather(1, labels[:, None]).squeeze(1), -(logp.exp() * logp).sum(-1)
            ((lp * g_lp.double()).sum() + (ent * g_ent.double()).sum()).backward()
            top = logp.detach().topk(5, dim=-1).values

            def err(x, ref):
                return (x.double() - ref).abs().max().item()
            gemm = "fp32" if dtype == torch.float32 else (
                "half->fp32" if dev == "cuda" and _mixed_mm_works(weight.device, dtype) else "fp32 copy")
            r = {"dtype": str(dtype).split(".")[-1], "T": t, "gemm": gemm, "log_prob": err(out.log_probs, lp),
                 "entropy": err(out.entropy, ent), "top5": err(out.top_logprobs, top),
                 "grad_h": err(hidden.grad, h64.grad), "grad_h_rel": err(hidden.grad, h64.grad) / h64.grad.abs().max().item(),
                 "grad_w": err(weight.grad, w64.grad), "grad_w_rel": err(weight.grad, w64.grad) / w64.grad.abs().max().item()}
            rows.append(r)
            print(f"{r['dtype']:>6} {t:>4} {gemm:>12} {r['log_prob']:>9.1e} {r['entropy']:>9.1e} {r['top5']:>9.1e} "
                  f"{r['grad_h']:>9.1e} {r['grad_h_rel']:>8.1e} {r['grad_w']:>9.1e} {r['grad_w_rel']:>8.1e}", flush=True)
            del logp, h64, w64
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--shapes", default="1x2048,4x4096", help="comma-separated BxA response-token shapes")
    ap.add_argument("--modes", default="nograd,grad")
    ap.add_argument("--paths", default="full,chunked")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max_gib", type=float, default=6.0, help="skip a case whose predicted peak is above this")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per child, after a warm-up")
    ap.add_argument("--rounds", type=int, default=1, help="children per case, alternating the paths")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gradient_checkpointing", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--exactness", action="store_true",
                    help="instead: errors of the chunked head against float64 on --device (fp32 and bf16)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--grad", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--actions", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_case(a)))
        return
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    if a.exactness:
        _write_json(a.json, exactness(a))
        return
    hidden = PRESETS[a.preset]["hidden_size"]
    print(f"torch {torch.__version__}, {a.device}, {a.dtype}, preset {a.preset} (hidden {hidden}), vocab {a.vocab}, "
          f"T={a.temperature}, {a.threads or torch.get_num_threads()} threads, budget {a.max_gib} GiB")
    print(f"{'shape':>8} {'mode':>7} {'path':>8} {'time s':>8} {'vs full':>8} {'cpu s':>8} {'vs full':>8} "
          f"{'peak':>10} {'% logits':>9}")
    results = []
    for shape in a.shapes.split(","):
        b, n = (int(x) for x in shape.lower().split("x"))
        for mode in a.modes.split(","):
            row = {}
            for path in a.paths.split(","):
                need = predicted_bytes(path, mode == "grad", b, n, a)
                row[path] = {"shape": shape, "mode": mode, "path": path, "logits_bytes": logits_bytes(b, n, a.vocab)}
                if need > a.max_gib * GiB:
                    row[path]["skipped"] = f"needs ~{need / GiB:.1f} GiB"
            # Rounds alternate the paths, so a burst of load from other jobs hits both; best time, worst peak.
            for _ in range(a.rounds):
                for path, r in row.items():
                    if "skipped" not in r and "failed" not in r:
                        _merge(r, _child(a, path, mode == "grad", b, n))
            for r in row.values():
                results.append(r)
                _print_row(r, row.get("full"))
    _write_json(a.json, results)


def _merge(r: dict, new: dict) -> None:
    if "failed" in new:
        r.update(new)
        return
    for key in ("seconds", "cpu_seconds"):
        r[key] = min(r.get(key, float("inf")), new[key])
    r["peak_bytes"] = max(r.get("peak_bytes", 0), new["peak_bytes"])


def _write_json(path: str | None, data) -> None:
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(data, f, indent=1)
        os.replace(path + ".tmp", path)


def _child(a, path: str, grad: bool, b: int, n: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", "--path", path, "--batch", str(b), "--actions", str(n),
           "--device", a.device, "--dtype", a.dtype, "--preset", a.preset, "--vocab", str(a.vocab),
           "--temperature", str(a.temperature), "--max_gib", str(a.max_gib), "--repeats", str(a.repeats)]
    cmd += ["--grad"] * grad + ["--gradient_checkpointing"] * a.gradient_checkpointing
    cmd += ["--threads", str(a.threads)] if a.threads else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"failed": f"exit {proc.returncode}: {tail[:120]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print_row(r: dict, full: dict | None) -> None:
    head = f"{r['shape']:>8} {r['mode']:>7} {r['path']:>8}"
    if "seconds" not in r:
        print(f"{head}   {r.get('skipped') or r.get('failed')}")
        return
    def ratio(key):
        return f"{r[key] / full[key]:.2f}x" if full and "seconds" in full and r is not full else "-"
    print(f"{head} {r['seconds']:>8.2f} {ratio('seconds'):>8} {r['cpu_seconds']:>8.2f} {ratio('cpu_seconds'):>8} "
          f"{r['peak_bytes'] / 2**20:>8.0f}MB {100 * r['peak_bytes'] / r['logits_bytes']:>8.1f}%", flush=True)


if __name__ == "__main__":
    main()
