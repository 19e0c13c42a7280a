"""Experience layouts: the saver writes the same records from this project's experiences and from
upstream OpenRLHF's (>= 0.8.3: right-padded sequences, per-token values (B, S - 1)), and refuses,
naming the shapes, an experience it cannot read, rather than writing wrong texts."""
import json
import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from openrlhf_ext.trajectory import ExperienceLayoutError, TrajectorySaver, load_trajectories
from openrlhf_ext.trajectory.layouts import detect_layout, shifted_to_response
from tests import rollouts

Experience = pytest.importorskip(
    "openrlhf.trainer.ppo_utils.experience", reason="upstream OpenRLHF (pip install --no-deps openrlhf pylatexenc)"
).Experience


@pytest.fixture(scope="module")
def embedded():
    return rollouts.load_embedded()


@pytest.fixture(scope="module")
def ro(embedded):
    model, tok = embedded
    return rollouts.sample(model, tok, n_prompts=4, n_samples=2, temperature=0.7, max_new_tokens=12)


def save(tmp_path, tok, experiences, name, **kw):
    saver = TrajectorySaver(tmp_path / name, tok, num_to_save=8, mark_high_entropy=True, ratio=0.2, seed=3,
                            save_trace=True, **kw)
    entry = saver.save_step(1, experiences)
    return saver, entry


def test_upstream_experiences_give_the_records_of_ours(tmp_path, embedded, ro):
    _, tok = embedded
    ours = rollouts.ours_experiences(ro, micro=4)
    upstream = rollouts.upstream_experiences(ro, micro=4, Experience=Experience)
    assert upstream[0].action_mask.shape[1] == upstream[0].sequences.shape[1] - 1  # really the (B, S - 1) layout
    _, entry_ours = save(tmp_path, tok, ours, "ours")
    _, entry_up = save(tmp_path, tok, upstream, "upstream")  # layout detected
    rec_ours = json.loads((tmp_path / "ours" / "trajectories_step_1.json").read_text())
    rec_up = json.loads((tmp_path / "upstream" / "trajectories_step_1.json").read_text())
    assert len(rec_ours) == len(rec_up) == 8
    for a, b in zip(rec_ours, rec_up):
        # means over the same values summed at other columns: equal up to float32 rounding
        for key in ("advantages", "return"):
            assert b.pop(key) == pytest.approx(a.pop(key), rel=1e-6, abs=1e-7)
        assert a == b
    for key in ("created_at", "save_seconds"):
        entry_ours.pop(key), entry_up.pop(key)
    assert entry_ours == entry_up
    load_trajectories(tmp_path / "upstream")  # strict: the files are valid


def test_upstream_texts_are_the_rollouts_own(tmp_path, embedded, ro):
    """The bug this fixes: read as [prompt | response] an upstream batch lost its prompt ("7+5=" saved
    as "7") and moved the prompt into the response, without a word."""
    _, tok = embedded
    _, entry = save(tmp_path, tok, rollouts.upstream_experiences(ro, micro=4, Experience=Experience), "up")
    records = load_trajectories(tmp_path / "up")
    by_row = {(r["experience_index"], r["sample_in_exp"]): r for r in records}
    assert len(by_row) == 8
    for (e, s), rec in by_row.items():
        i = 4 * e + s
        response = tok.decode(ro.response_ids[i])
        assert rec["prompt_text"] == ro.prompts[i]
        assert rec["pure_generated_text"] == response
        assert rec["generated_text"] == tok.decode(ro.prompt_ids[i] + ro.response_ids[i])
        assert "".join(t["text"] for t in rec["generated_tokens"]) == rec["generated_text"]  # lossless
        assert [t["id"] for t in rec["pure_generated_tokens"]] == ro.response_ids[i]
        assert [t["entropy_score"] for t in rec["pure_generated_tokens"]] == pytest.approx(ro.entropy[i].tolist())
        assert rec["info"]["reward"] == pytest.approx(float(ro.rewards[i]))
        assert rec["info"]["response_length"] == len(ro.response_ids[i])
        assert rec["info"]["truncated"] == bool(ro.truncated[i])  # moved to the experience in 0.10: still read
    # marks are the step's: k = ceil(0.2 * n) tokens over all 8 responses
    n = sum(len(r) for r in ro.response_ids)
    marked = sum(t["high_entropy"] for r in records for t in r["pure_generated_tokens"])
    assert marked >= -(-n // 5) and entry["num_response_tokens"] == n


def test_explicit_layout_and_refusals(tmp_path, embedded, ro, caplog):
    _, tok = embedded
    upstream = rollouts.upstream_experiences(ro, micro=4, Experience=Experience)
    ours = rollouts.ours_experiences(ro, micro=4)
    assert detect_layout(upstream[0]) == "shifted" and detect_layout(ours[0]) == "response"
    # saying the layout works, and saying the wrong one is an error that names the shapes
    _, entry = save(tmp_path, tok, upstream, "said", layout="shifted")
    assert entry["num_saved"] == 8
    S = upstream[0].sequences.shape[1]
    with pytest.raises(ExperienceLayoutError, match=rf"before its first action token in the last {S - 1} columns of "
                       rf"sequences \(4, {S}\).*action_mask \(4, {S - 1}\).*layout='shifted'"):
        save(tmp_path, tok, upstream, "wrong", layout="response", strict=True)
    with pytest.raises(ExperienceLayoutError, match=rf"layout='shifted' needs action_mask \(B, S - 1\), but "
                       rf"sequences is \(4, {ours[0].sequences.shape[1]}\)"):
        save(tmp_path, tok, ours, "wrong2", layout="shifted", strict=True)
    # an experience that fits neither: refused, logged as an error, nothing written (no strict needed)
    bad = rollouts.ours_experiences(ro, micro=4)[:1]
    bad[0].action_mask = torch.ones_like(bad[0].sequences, dtype=torch.bool)  # (B, S): no layout has that
    with caplog.at_level(logging.ERROR, logger="openrlhf_ext.trajectory.saver"):
        saver, entry = save(tmp_path, tok, bad, "bad")
    assert entry is None and saver.failures == 1
    assert not (tmp_path / "bad").exists()
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    shape = tuple(bad[0].sequences.shape)
    assert f"sequences {shape} and action_mask {shape}" in message and "cannot tell its layout" in message
    # per-token values that do not match the mask are refused too
    bad = rollouts.upstream_experiences(ro, micro=4, Experience=Experience)[:1]
    bad[0].action_entropy = bad[0].action_entropy[:, 1:]
    with pytest.raises(ExperienceLayoutError, match=r"action_entropy is \(4, \d+\) but action_mask is \(4, \d+\)"):
        save(tmp_path, tok, bad, "bad2", strict=True)


def test_a_response_layout_batch_with_the_prompt_inside_its_response_columns_is_refused(tokenizer):
    """An upstream batch whose longest row is two tokens short of S reads as (B, A < S - 1): its
    prompt tokens then sit in the response columns before the first action token."""
    import types

    seq = torch.tensor([[5, 6, 7, 8, 9, 0, 0]])  # prompt 5 6 7, response 8
    exp = types.SimpleNamespace(sequences=seq, attention_mask=(seq > 0).long(),
                                action_mask=torch.tensor([[0, 0, 1, 0, 0]]).bool(), info={})
    with pytest.raises(ExperienceLayoutError, match="real tokens before its first action token"):
        from openrlhf_ext.trajectory.layouts import as_response_layout

        as_response_layout(exp, "auto")


def test_multi_turn_gaps_keep_their_text_without_entropy(tmp_path, embedded, ro):
    """Tokens inside the response that were not sampled (a tool's output between two turns) are in
    the texts, with no entropy, log-prob or mark."""
    _, tok = embedded
    upstream = rollouts.upstream_experiences(ro, micro=4, Experience=Experience)
    exp = upstream[0]
    i = max(range(4), key=lambda b: len(ro.response_ids[b]))  # the longest response of the batch
    n_p, n_r = len(ro.prompt_ids[i]), len(ro.response_ids[i])
    assert n_r >= 2
    exp.action_mask[i, n_p - 1 + 1] = False  # response token 1 was an "observation" token
    converted = shifted_to_response(exp)
    assert int(converted.action_mask[i].sum()) == n_r  # every real response token is in the text
    assert torch.isnan(converted.action_entropy[i, 1]) and not torch.isnan(converted.action_entropy[i, 0])
    save(tmp_path, tok, upstream, "gaps")
    rec = next(r for r in load_trajectories(tmp_path / "gaps") if r["experience_index"] == 0 and r["sample_in_exp"] == i)
    assert rec["pure_generated_text"] == tok.decode(ro.response_ids[i])
    toks = rec["pure_generated_tokens"]
    assert toks[1]["entropy_score"] is None and toks[1]["logprob"] is None and not toks[1]["high_entropy"]
    assert toks[0]["entropy_score"] == pytest.approx(float(ro.entropy[i][0]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 5)), min_size=1, max_size=5), st.integers(0, 2))
def test_shifted_to_response_puts_every_token_back(rows, extra_pad):
    """Property: any batch of [prompt | response | pad] rows comes back as the same prompt and
    response ids, with each token's value (stored one column before it) beside it."""
    S = max(p + r for p, r in rows) + extra_pad
    B = len(rows)
    seqs, attn, amask = torch.zeros(B, S, dtype=torch.long), torch.zeros(B, S, dtype=torch.long), torch.zeros(B, S - 1)
    values = torch.zeros(B, S - 1)
    for b, (p, r) in enumerate(rows):
        seqs[b, : p + r] = torch.arange(1, p + r + 1) + 100 * b
        attn[b, : p + r] = 1
        amask[b, p - 1 : p - 1 + r] = 1
        values[b, p - 1 : p - 1 + r] = seqs[b, p : p + r].float()  # the value of a token is its id
    exp = torch.nn.Module()  # any object with the attributes
    exp.sequences, exp.attention_mask, exp.action_mask, exp.action_entropy = seqs, attn, amask.bool(), values
    out = shifted_to_response(exp)
    P = out.sequences.shape[1] - out.action_mask.shape[1]
    for b, (p, r) in enumerate(rows):
        prompt = out.sequences[b, :P][out.attention_mask[b, :P].bool()]
        response = out.sequences[b, P:][out.action_mask[b]]
        assert prompt.tolist() == seqs[b, :p].tolist()
        assert response.tolist() == seqs[b, p : p + r].tolist()
        assert out.action_entropy[b][out.action_mask[b]].tolist() == response.float().tolist()


@pytest.mark.parametrize("extra_rows", [0, 1])
def test_per_sample_advantages_pass_through_the_shifted_layout(tmp_path, embedded, ro, extra_rows):
    """(B,) advantages and returns (accepted beside a (B, S - 1) action_mask) are per sample already:
    they are kept as they are, not averaged over the tokens. With B == S - 1 they used to broadcast
    against the mask without an error; with B != S - 1 the conversion failed."""
    import types

    _, tok = embedded
    exp = rollouts.upstream_experiences(ro, micro=4, Experience=Experience)[0]
    B, S = exp.sequences.shape
    if extra_rows:  # rows of pad only, until B == S - 1: the case that broadcast silently
        n = S - 1 - B
        exp = types.SimpleNamespace(
            sequences=torch.cat([exp.sequences, torch.zeros(n, S, dtype=exp.sequences.dtype)]),
            attention_mask=torch.cat([exp.attention_mask, torch.zeros(n, S, dtype=exp.attention_mask.dtype)]),
            action_mask=torch.cat([exp.action_mask, torch.zeros(n, S - 1, dtype=exp.action_mask.dtype)]),
            action_entropy=torch.cat([exp.action_entropy, torch.zeros(n, S - 1)]), info={})
        B = S - 1
    assert B != S - 1 or extra_rows
    per_sample = torch.arange(B, dtype=torch.float32) - 1.5  # (B,)
    exp.advantages, exp.returns = per_sample, per_sample * 2
    from openrlhf_ext.trajectory.layouts import as_response_layout

    converted = as_response_layout(exp)
    assert converted.advantages.tolist() == per_sample.tolist()
    assert converted.returns.tolist() == (per_sample * 2).tolist()
    if not extra_rows:  # and the saver writes them per record
        exp = rollouts.upstream_experiences(ro, micro=4, Experience=Experience)
        for e in exp:
            e.advantages = torch.arange(e.sequences.shape[0], dtype=torch.float32) - 1.5
            e.returns = e.advantages * 2
        save(tmp_path, tok, exp, "per_sample")
        for rec in load_trajectories(tmp_path / "per_sample"):
            assert rec["advantages"] == rec["sample_in_exp"] - 1.5
            assert rec["return"] == 2 * (rec["sample_in_exp"] - 1.5)
