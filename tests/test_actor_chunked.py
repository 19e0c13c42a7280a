"""The chunked LM head and the Actor on it: the same numbers as a float64 recomputation, without logits."""
from __future__ import annotations

import contextlib
import copy
import doctest

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from openrlhf_ext.models import actor as actor_module
from openrlhf_ext.models import chunked_head as chunked_head_module
from openrlhf_ext.models.actor import Actor
from openrlhf_ext.models.chunked_head import chunked_head

TOL = 2e-3  # the bound against float64, in fp32


def reference_head(hidden, weight, bias, labels, temperature, top_k=0):
    """float64 autograd through the full logits: (log_probs, entropy, top values, top ids, leaves)."""
    h = hidden.detach().double().requires_grad_()
    w = weight.detach().double().requires_grad_()
    b = None if bias is None else bias.detach().double().requires_grad_()
    z = (h @ w.T + (0 if b is None else b)) / temperature
    logp = torch.log_softmax(z, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    log_probs = logp.gather(1, labels[:, None]).squeeze(1)
    top = logp.topk(top_k, dim=-1) if top_k else None
    return log_probs, entropy, top, (h, w, b)


def close(got, want, tol=TOL):
    return torch.allclose(got.double(), want.double(), atol=tol, rtol=tol)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 19), hdim=st.integers(1, 9), vocab=st.integers(2, 60), rows=st.integers(1, 7),
       cols=st.integers(1, 70),
       temperature=st.sampled_from([0.3, 0.7, 1.0, 1.6]), with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_values_and_gradients_match_float64(n, hdim, vocab, rows, cols, temperature, with_bias, seed):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, hdim, generator=g).mul_(2).requires_grad_()
    weight = torch.randn(vocab, hdim, generator=g).requires_grad_()
    bias = torch.randn(vocab, generator=g).requires_grad_() if with_bias else None
    labels = torch.randint(0, vocab, (n,), generator=g)
    g_lp, g_ent = torch.randn(n, generator=g), torch.randn(n, generator=g)
    k = min(3, vocab)
    out = chunked_head(hidden, weight, bias, labels, temperature=temperature, top_k=k, tile=(rows, cols))
    assert out.log_probs.dtype == out.entropy.dtype == torch.float32 and out.log_probs.shape == (n,)
    ((out.log_probs * g_lp).sum() + (out.entropy * g_ent).sum()).backward()

    lp, ent, top, (h, w, b) = reference_head(hidden, weight, bias, labels, temperature, top_k=k)
    ((lp * g_lp.double()).sum() + (ent * g_ent.double()).sum()).backward()
    assert close(out.log_probs, lp) and close(out.entropy, ent)
    assert close(hidden.grad, h.grad) and close(weight.grad, w.grad)
    if with_bias:
        assert close(bias.grad, b.grad)
    assert out.top_ids.shape == (n, k) and out.top_ids.dtype == torch.long
    assert close(out.top_logprobs, top.values)
    # the ids' log-probs are theirs (ties may order equal values either way)
    assert close(torch.log_softmax((hidden.double() @ weight.double().T + (0 if bias is None else bias.double()))
                                   / temperature, -1).gather(1, out.top_ids), top.values)


def test_gradient_from_log_probs_alone_and_no_entropy():
    torch.manual_seed(0)
    hidden, weight = torch.randn(9, 4, requires_grad=True), torch.randn(30, 4, requires_grad=True)
    labels = torch.randint(0, 30, (9,))
    out = chunked_head(hidden, weight, None, labels, temperature=0.8, with_entropy=False, tile=(4, 7))
    assert out.entropy is None and out.top_ids is None
    out.log_probs.sum().backward()
    lp, _, _, (h, w, _) = reference_head(hidden, weight, None, labels, 0.8)
    lp.sum().backward()
    assert close(hidden.grad, h.grad) and close(weight.grad, w.grad)


def test_no_grad_results_carry_no_graph_and_equal_the_grad_path():
    torch.manual_seed(1)
    hidden, weight = torch.randn(12, 5, requires_grad=True), torch.randn(40, 5)
    labels = torch.randint(0, 40, (12,))
    with torch.no_grad():
        a = chunked_head(hidden, weight, None, labels, temperature=1.3, top_k=2)
    b = chunked_head(hidden, weight, None, labels, temperature=1.3, top_k=2)
    assert not a.log_probs.requires_grad and b.log_probs.requires_grad and not b.top_logprobs.requires_grad
    assert torch.equal(a.log_probs, b.log_probs.detach()) and torch.equal(a.top_ids, b.top_ids)


def test_masked_vocabulary_and_one_hot_rows():
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bias = torch.tensor([float("-inf"), 0.0, 0.0])  # token 0 is masked out: uniform over 1 and 2
    for tile in ((2, 3), (1, 1)):  # (1, 1): a row's first tile can be all -inf
        out = chunked_head(hidden, torch.zeros(3, 2), bias, torch.tensor([1, 2]), tile=tile)
        assert torch.allclose(out.entropy, torch.log(torch.tensor(2.0)).expand(2))
        assert torch.allclose(out.log_probs, torch.log(torch.tensor(0.5)).expand(2))
    nowhere = chunked_head(hidden, torch.zeros(3, 2), torch.full((3,), float("-inf")), torch.tensor([0, 1]), tile=(1, 1))
    assert torch.isnan(nowhere.entropy).all()  # only -inf logits: no distribution
    weight = torch.tensor([[0.0, 0.0], [0.0, 0.0], [200.0, 0.0]])
    one_hot = chunked_head(hidden, weight, None, torch.tensor([2, 2]))  # row 0: token 2 at +200
    assert one_hot.entropy[0].item() == 0.0 and one_hot.log_probs[0].item() == 0.0


def test_bf16_weights_are_computed_in_float32():
    torch.manual_seed(2)
    hidden = torch.randn(20, 16).bfloat16().requires_grad_()
    weight = (torch.randn(500, 16) * 3).bfloat16().requires_grad_()
    labels = torch.randint(0, 500, (20,))
    out = chunked_head(hidden, weight, None, labels, temperature=0.7, tile=(6, 128))
    (out.log_probs.sum() + out.entropy.sum()).backward()
    lp, ent, _, (h, w, _) = reference_head(hidden, weight, None, labels, 0.7)
    (lp.sum() + ent.sum()).backward()
    # bf16 logits would be off by ~0.1 here (|logit| ~ 30, 8 bits of mantissa); float32 ones are not
    assert close(out.log_probs, lp, 1e-4) and close(out.entropy, ent, 1e-4)
    assert hidden.grad.dtype == weight.grad.dtype == torch.bfloat16
    assert close(hidden.grad, h.grad, 2e-2) and close(weight.grad, w.grad, 2e-2)  # bf16 rounding of the result


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op makes."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def tiny_llama(vocab=300, hidden=32, tied=False, seed=0, arch="llama", **extra):
    import transformers

    config_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "granite": (transformers.GraniteConfig, transformers.GraniteForCausalLM),
        "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
    }[arch]
    torch.manual_seed(seed)
    cfg = config_cls(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=2, head_dim=hidden // 2, tie_word_embeddings=tied,
                     max_position_embeddings=256, **extra)
    return model_cls(cfg)


def batch(vocab, b=3, prompt=5, actions=7, seed=0):
    """Left-padded prompts, right-padded responses, as pack_sequences makes them."""
    g = torch.Generator().manual_seed(seed)
    sequences = torch.randint(3, vocab, (b, prompt + actions), generator=g)  # (B, S)
    attention_mask = torch.ones_like(sequences)  # (B, S)
    attention_mask[0, :2] = 0  # left padding of a short prompt
    attention_mask[1, -3:] = 0  # a response that ended early
    sequences[attention_mask == 0] = 0
    return sequences, attention_mask, actions


def test_the_actor_never_makes_a_tensor_of_the_logits_size(monkeypatch):
    vocab, actions, tile = 5000, 64, (8, 1000)
    monkeypatch.setattr(chunked_head_module, "CPU_TILE_BYTES", tile[0] * tile[1] * 4 // torch.get_num_threads())
    monkeypatch.setattr(chunked_head_module, "CPU_MIN_VOCAB_TILE", tile[1])
    model = tiny_llama(vocab=vocab, hidden=16)
    sequences, mask, _ = batch(vocab, b=2, prompt=4, actions=actions)
    n_logits = 2 * actions * vocab
    sizes = {}
    for chunked in (True, False):
        actor = Actor(copy.deepcopy(model), chunked=chunked)
        with LargestTensor() as seen:
            log_probs, entropy = actor(sequences, mask, actions, temperature=0.7)
            (log_probs.sum() + entropy.sum()).backward()
        sizes[chunked] = seen.largest
    assert sizes[False] >= n_logits  # the full-logits path does (so the check can fail)
    assert sizes[True] <= vocab * 16 < n_logits / 2  # the weight's gradient is the largest tensor


@pytest.mark.parametrize("arch,tied,extra", [
    ("llama", False, {}), ("llama", True, {}), ("qwen2", True, {}),
    ("granite", False, {"logits_scaling": 4.0}),   # logits / 4: folded into the temperature
    ("gemma2", True, {"final_logit_softcapping": 5.0}),  # non-linear: takes the full-logits path
])
@pytest.mark.parametrize("temperature", [0.6, 1.0])
def test_actor_chunked_equals_full_logits(arch, tied, extra, temperature):
    model = tiny_llama(arch=arch, tied=tied, **extra)
    sequences, mask, actions = batch(model.config.vocab_size)
    real = mask[:, -actions:].bool()
    outs, grads = [], []
    for chunked in (True, False):
        actor = Actor(copy.deepcopy(model), chunked=chunked)
        falls_back = arch == "gemma2" and chunked
        with pytest.warns(UserWarning, match="soft-caps") if falls_back else contextlib.nullcontext():
            out = actor.score(sequences, mask, actions, temperature=temperature, top_k=4)
        (out.log_probs[real].sum() + out.entropy[real].sum()).backward()
        outs.append(out)
        grads.append({n: p.grad for n, p in actor.model.named_parameters() if p.grad is not None})
    new, old = outs
    assert new.log_probs.shape == new.entropy.shape == (3, actions) and new.log_probs.dtype == torch.float32
    assert new.alternatives.ids.shape == new.alternatives.logprobs.shape == (3, actions, 4)
    assert close(new.log_probs, old.log_probs, 1e-4) and close(new.entropy, old.entropy, 1e-4)
    assert torch.equal(new.alternatives.ids[real], old.alternatives.ids[real])
    assert close(new.alternatives.logprobs, old.alternatives.logprobs, 1e-4)
    assert (new.alternatives.logprobs[real].diff(dim=-1) <= 0).all()  # most probable first
    assert (new.log_probs[~real] == 0).all() and (new.entropy[~real] == 0).all()  # padding slots
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert close(grads[0][name], grads[1][name], 1e-4), name
    if tied:  # the head's gradient reached the embedding it shares
        emb = grads[0]["model.embed_tokens.weight"]
        assert emb[sequences.unique()].abs().sum() > 0 and (emb.abs().sum(-1) > 0).sum() > len(sequences.unique())


def test_actor_forward_api_and_bf16_model():
    model = tiny_llama(vocab=400, hidden=32).to(torch.bfloat16)
    actor = Actor(model)
    sequences, mask, actions = batch(400)
    log_probs, entropy = actor(sequences, mask, actions, temperature=0.9)
    assert log_probs.shape == entropy.shape == (3, actions) and log_probs.dtype == entropy.dtype == torch.float32
    assert actor(sequences, mask, actions, with_entropy=False)[1] is None
    # float64 recomputation from the same bf16 hidden states and weight
    with torch.no_grad():
        hidden = model.model(input_ids=sequences, attention_mask=mask,
                             position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).last_hidden_state
        z = hidden[:, -actions - 1:-1].double() @ model.lm_head.weight.double().T / 0.9
        logp = torch.log_softmax(z, -1)
        want_lp = logp.gather(-1, sequences[:, -actions:, None]).squeeze(-1)
        want_ent = -(logp.exp() * logp).sum(-1)
    real = mask[:, -actions:].bool()
    assert close(log_probs[real], want_lp[real]) and close(entropy[real], want_ent[real])


@pytest.mark.parametrize("module", [chunked_head_module, actor_module])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_bad_arguments_are_clear_errors():
    h, w, y = torch.zeros(2, 3), torch.zeros(5, 3), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        chunked_head(h, w, None, y, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        chunked_head(h, w, None, y, top_k=6)
    with pytest.raises(ValueError, match="hidden"):
        chunked_head(torch.zeros(2, 4), w, None, y)


ZERO3_SCRIPT = r"""
import json, sys, warnings
import torch
from openrlhf_ext.models.actor import Actor
from openrlhf_ext.models.embedded import embedded_model_path
from openrlhf_ext.ray.deepspeed_utils import build_engine, free_port, init_distributed, setup_dist_env

setup_dist_env(0, 1, "127.0.0.1", free_port())
init_distributed()
torch.manual_seed(0)
reference = Actor.from_pretrained(embedded_model_path())
engine = build_engine(Actor.from_pretrained(embedded_model_path()), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0,
                      zero_stage=3, micro_batch=2, grad_accum=1, world_size=1, bf16=False, max_norm=1.0)
sequences = torch.randint(4, 20, (2, 12))
mask = torch.ones_like(sequences)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = engine.module.score(sequences, mask, 6, temperature=0.7, top_k=3)
want = reference.score(sequences, mask, 6, temperature=0.7, top_k=3)
engine.backward(-out.log_probs.mean())
engine.step()
after = engine.module.score(sequences, mask, 6, temperature=0.7).log_probs
print(json.dumps({
    "warnings": [str(w.message) for w in caught],
    "log_probs": (out.log_probs - want.log_probs).abs().max().item(),
    "entropy": (out.entropy - want.entropy).abs().max().item(),
    "top_ids_equal": bool(torch.equal(out.alternatives.ids, want.alternatives.ids)),
    "trained": (after - out.log_probs).mean().item(),
}))
"""


def test_zero3_sharded_head_takes_the_full_logits_path_and_trains(tmp_path):
    """Under DeepSpeed ZeRO-3 (real, one gloo rank) the lm_head weight is a shard outside the
    model's forward: the actor says so once, takes the full-logits path, gives the unsharded
    model's numbers and trains (in a subprocess: it initialises torch.distributed)."""
    import json
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    script = tmp_path / "zero3.py"
    script.write_text(ZERO3_SCRIPT)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    ours = [w for w in got["warnings"] if w.startswith("Actor:")]
    assert ours == ["Actor: full-logits forward for LlamaForCausalLM: ZeRO-3 shards the lm_head weight"]
    assert got["log_probs"] < 1e-5 and got["entropy"] < 1e-5 and got["top_ids_equal"]
    assert got["trained"] > 0  # one step up the sampled tokens' log-probs raised them
