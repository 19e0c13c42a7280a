"""high_entropy_mask: exactly the threshold semantics of FORMAT.md."""
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from openrlhf_ext.trajectory import high_entropy_mask
from openrlhf_ext.trajectory.marks import top_count


def test_top_count_never_rounds_a_whole_product_up():
    assert top_count(0.1, 30) == 3  # 0.1 * 30 == 3.0000000000000004 in binary floating point
    assert top_count(0.3, 10) == 3
    assert top_count(0.7, 10) == 7
    assert top_count(0.2, 7) == 2  # 1.4 -> 2
    assert top_count(0.001, 5) == 1  # at least one
    assert top_count(1.0, 9) == 9
    assert top_count(0.5, 0) == 0


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.01, float("nan")])
def test_bad_ratio_is_rejected(ratio):
    with pytest.raises(ValueError, match="ratio"):
        high_entropy_mask(torch.ones(1, 3), torch.ones(1, 3, dtype=torch.bool), ratio)


entropy_rows = st.lists(
    st.lists(st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.floats(0, 5), st.just(float("nan")), st.just(float("inf"))),
             min_size=4, max_size=4),
    min_size=1, max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(rows=entropy_rows, mask_bits=st.lists(st.booleans(), min_size=24, max_size=24), ratio=st.floats(0.01, 1.0))
def test_exactly_k_marked_plus_ties(rows, mask_bits, ratio):
    ent = torch.tensor(rows, dtype=torch.float32)
    mask = torch.tensor(mask_bits[: ent.numel()]).reshape(ent.shape)
    marks, tau = high_entropy_mask(ent, mask, ratio)
    valid = mask & torch.isfinite(ent)
    values = sorted(ent[valid].tolist(), reverse=True)
    if not values:
        assert not marks.any() and math.isnan(tau)
        return
    k = top_count(ratio, len(values))
    assert tau == values[k - 1]
    # exactly the tokens >= tau among valid ones: k of them plus every tie at tau
    assert int(marks.sum()) == sum(v >= tau for v in values) >= k
    assert not (marks & ~valid).any()  # masked or non-finite never marked


def test_ratio_one_marks_every_valid_token_and_single_token_steps():
    ent = torch.tensor([[0.3, float("nan"), 2.0]])
    mask = torch.tensor([[True, True, False]])
    marks, tau = high_entropy_mask(ent, mask, 1.0)
    assert marks.tolist() == [[True, False, False]] and tau == pytest.approx(0.3)
    marks, tau = high_entropy_mask(torch.tensor([[1.5]]), torch.tensor([[True]]), 0.2)
    assert marks.tolist() == [[True]] and tau == 1.5


def test_all_masked_marks_nothing():
    marks, tau = high_entropy_mask(torch.rand(3, 5), torch.zeros(3, 5, dtype=torch.bool), 0.2)
    assert not marks.any() and math.isnan(tau)


def test_response_scope_ranks_inside_each_row():
    ent = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0], [9.0, 9.0, 9.0, 9.0, 9.0]])
    mask = torch.ones_like(ent, dtype=torch.bool)
    mask[2] = False
    marks, taus = high_entropy_mask(ent, mask, 0.4, scope="response")
    assert marks.tolist() == [[False, False, False, True, True], [True, True, False, False, False], [False] * 5]
    assert taus[:2].tolist() == pytest.approx([0.4, 4.0]) and math.isnan(taus[2])
    # the step scope would have marked only the second row's tokens
    step_marks, _ = high_entropy_mask(ent, mask, 0.4)
    assert not step_marks[0].any()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, shards, ratio, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ent, mask = shards[rank]
    marks, tau = high_entropy_mask(ent, mask, ratio, group=dist.group.WORLD)
    results[rank] = (marks, tau)
    dist.destroy_process_group()


def test_step_scope_gathers_across_ranks():
    """Two real gloo ranks with different numbers of tokens get the threshold of all tokens."""
    g = torch.Generator().manual_seed(0)
    shards = [
        (torch.rand(3, 7, generator=g) * 3, torch.rand(3, 7, generator=g) > 0.3),
        (torch.rand(2, 11, generator=g), torch.rand(2, 11, generator=g) > 0.2),  # low entropies
    ]
    manager = mp.Manager()
    results = manager.dict()
    mp.start_processes(_rank_main, args=(2, _free_port(), shards, 0.25, results), nprocs=2, join=True, start_method="spawn")
    all_values = torch.cat([e[m] for e, m in shards])
    k = top_count(0.25, all_values.numel())
    want_tau = torch.sort(all_values, descending=True).values[k - 1].item()
    assert results[0][1] == results[1][1] == pytest.approx(want_tau)
    total_marked = sum(int(results[r][0].sum()) for r in range(2))
    assert total_marked == int((all_values >= want_tau).sum())
    # rank 1 alone would have marked its own top 25%; against the step it marks fewer
    local_marks, _ = high_entropy_mask(*shards[1], 0.25)
    assert int(results[1][0].sum()) < int(local_marks.sum())
