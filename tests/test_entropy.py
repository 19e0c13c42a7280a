"""token_entropy: the entropy of the distribution each token was sampled from."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from openrlhf_ext.trajectory import token_entropy


def reference_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """float64 softmax entropy, written the obvious way."""
    z = logits.double() / temperature
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    return -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(-1)


finite_logits = arrays(
    np.float32,
    st.tuples(st.integers(1, 6), st.integers(1, 70)),
    elements=st.floats(-60, 60, width=32),
)


@settings(max_examples=60, deadline=None)
@given(x=finite_logits, temperature=st.sampled_from([0.3, 0.7, 1.0, 1.5]), chunk=st.integers(1, 4))
def test_matches_float64_reference(x, temperature, chunk):
    logits = torch.from_numpy(x)
    got = token_entropy(logits, temperature=temperature, chunk_size=chunk)
    want = reference_entropy(logits, temperature)
    assert got.dtype == torch.float32 and got.shape == logits.shape[:-1]
    assert torch.allclose(got.double(), want, atol=2e-5, rtol=1e-5)


def test_uniform_is_log_vocab_and_any_leading_shape():
    logits = torch.zeros(2, 3, 5, 11)
    got = token_entropy(logits)
    assert got.shape == (2, 3, 5)
    assert torch.allclose(got, torch.full_like(got, math.log(11)))


def test_large_vocab_accuracy_152k():
    torch.manual_seed(0)
    logits = torch.randn(4, 152_064) * 4
    err = (token_entropy(logits).double() - reference_entropy(logits)).abs().max().item()
    assert err < 1e-4


def test_minus_inf_logits_contribute_nothing():
    logits = torch.tensor([[0.0, 0.0, float("-inf"), float("-inf")], [5.0, float("-inf"), float("-inf"), float("-inf")]])
    got = token_entropy(logits)
    assert got[0].item() == pytest.approx(math.log(2), abs=1e-6)
    assert got[1].item() == 0.0  # one-hot: exactly zero


def test_huge_logits_do_not_overflow():
    logits = torch.tensor([[3e38, 3e38, -3e38], [1e30, 0.0, -1e30]])
    got = token_entropy(logits)
    assert got[0].item() == pytest.approx(math.log(2), abs=1e-6)
    assert got[1].item() == 0.0


def test_rows_without_a_distribution_are_nan():
    logits = torch.tensor([[float("-inf")] * 3, [0.0, float("nan"), 1.0], [float("inf"), 0.0, 0.0], [0.0, 1.0, 2.0]])
    got = token_entropy(logits)
    assert torch.isnan(got[:3]).all() and torch.isfinite(got[3])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_low_precision_inputs_give_float32(dtype):
    torch.manual_seed(1)
    logits = (torch.randn(3, 7, 300) * 3).to(dtype)
    got = token_entropy(logits, temperature=0.8)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), reference_entropy(logits.double(), 0.8), atol=1e-5)


def test_chunk_size_does_not_change_the_result():
    torch.manual_seed(2)
    logits = torch.randn(37, 1000) * 5
    base = token_entropy(logits, chunk_size=37)
    for c in (1, 5, 16, 100):
        assert torch.equal(token_entropy(logits, chunk_size=c), base)


def test_differentiable_path_gradient_matches_reference():
    torch.manual_seed(3)
    x = (torch.randn(4, 9, dtype=torch.float64) * 2)
    x[0, 3] = float("-inf")
    x1 = x.clone().float().requires_grad_(True)
    token_entropy(x1, temperature=0.9).sum().backward()
    # float64 autograd through where() gives NaN at -inf; a very negative finite logit is the same
    # distribution to float64 precision and has a clean gradient.
    x2 = torch.nan_to_num(x, neginf=-1e4).requires_grad_(True)
    reference_entropy(x2, 0.9).sum().backward()
    assert torch.isfinite(x1.grad).all()
    assert torch.allclose(x1.grad.double(), x2.grad, atol=1e-5)
    assert x1.grad[0, 3].item() == 0.0


def test_no_grad_path_is_used_under_no_grad():
    x = torch.randn(2, 8, requires_grad=True)
    with torch.no_grad():
        out = token_entropy(x)
    assert not out.requires_grad


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="temperature"):
        token_entropy(torch.zeros(2, 3), temperature=0)
    with pytest.raises(TypeError, match="floating"):
        token_entropy(torch.zeros(2, 3, dtype=torch.long))


def test_empty_batch():
    assert token_entropy(torch.zeros(0, 5)).shape == (0,)
