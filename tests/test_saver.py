"""TrajectorySaver: a step's experiences become FORMAT.md files a reader can trust."""
import argparse
import json
import logging
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from openrlhf_ext.trajectory import TrajectorySaver, add_trajectory_args, high_entropy_mask, load_trajectories
from openrlhf_ext.trajectory.files import read_manifest
from tests.conftest import make_experience

PROMPTS = ["Q: 6 * 7 = ?", "Q: 12 + 30 = ?", "Q: 50 - 8 = ?", "Q: 84 / 2 = ?"]
RESPONSES = [
    "The answer is 42.", "Wait, maybe 41 🙂", "我们来计算一下：答案是七。", "6 * 7 = 42, so 42.",
]


def step_experiences(tokenizer, seed=0):
    """Two experiences (micro-batches) of 4 responses: 2 prompts x 2 samples each, 4 prompt groups."""
    exps = []
    for e in range(2):
        prompts = [PROMPTS[2 * e]] * 2 + [PROMPTS[2 * e + 1]] * 2
        exps.append(make_experience(tokenizer, prompts, RESPONSES, seed=seed + e, rewards=[1.0, 0.0, 0.5, 1.0],
                                    labels=["42", "42", "42", "42"]))
    return exps


def make_saver(tmp_path, tokenizer, *flags):
    parser = add_trajectory_args(argparse.ArgumentParser())
    parser.add_argument("--save_path", default=str(tmp_path))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(["--save_trajectories", "--mark_high_entropy_tokens", *flags])
    return TrajectorySaver.from_args(args, tokenizer)


def test_save_step_writes_the_files_of_the_format(tmp_path, tokenizer):
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "8", "--save_entropy_trace")
    exps = step_experiences(tokenizer)
    entry = saver.save_step(3, exps)
    out = tmp_path / "trajectories"
    assert (out / "trajectories_step_3.json").exists()
    assert (out / "steps" / "step_000003.npz").exists()
    records = load_trajectories(out)  # strict: raises on any format problem
    assert len(records) == 8 == entry["num_saved"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format_version"] == 2 and summary["latest_step"] == 3 and summary["num_steps_written"] == 1
    (manifest_entry,) = read_manifest(out / "manifest.jsonl")
    assert manifest_entry["num_responses"] == 8 and manifest_entry["file"] == "trajectories_step_3.json"
    assert manifest_entry["num_response_tokens"] == sum(int(e.action_mask.sum()) for e in exps)
    assert sum(manifest_entry["hist_counts"]) == manifest_entry["num_response_tokens"]
    assert manifest_entry["reward_mean"] == pytest.approx(np.mean([1.0, 0.0, 0.5, 1.0]))


def test_records_agree_with_the_experiences(tmp_path, tokenizer):
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "8")
    exps = step_experiences(tokenizer)
    saver.save_step(1, exps)
    records = load_trajectories(tmp_path / "trajectories")
    for rec in records:
        exp = exps[rec["experience_index"]]
        i = rec["sample_in_exp"]
        m = exp.action_mask[i]
        assert rec["pure_generated_text"] == RESPONSES[i]
        assert rec["generated_text"].endswith(RESPONSES[i]) and rec["generated_text"].startswith(rec["prompt_text"])
        assert rec["advantages"] == pytest.approx(exp.advantages[i][m].mean().item(), abs=1e-6)
        assert rec["return"] == pytest.approx(exp.returns[i][m].mean().item(), abs=1e-6)
        assert rec["info"]["reward"] == exp.info["reward"][i].item()
        assert rec["info"]["response_length"] == int(m.sum()) == len(rec["pure_generated_tokens"])
        assert rec["label"] == "42"
        scores = [t["entropy_score"] for t in rec["pure_generated_tokens"]]
        assert scores == pytest.approx(exp.action_entropy[i][m].tolist(), abs=1e-6)
        assert [t["id"] for t in rec["pure_generated_tokens"]] == exp.sequences[i, -exp.action_mask.shape[1]:][m].tolist()
        prompt_tokens = [t for t in rec["generated_tokens"] if t.get("prompt")]
        assert all(t["entropy_score"] is None and not t["high_entropy"] for t in prompt_tokens)


def test_threshold_is_the_steps_not_the_saved_responses(tmp_path, tokenizer):
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "2", "--high_entropy_token_ratio", "0.3")
    exps = step_experiences(tokenizer)
    width = max(e.action_mask.shape[1] for e in exps)
    ent = torch.cat([torch.nn.functional.pad(e.action_entropy, (0, width - e.action_mask.shape[1])) for e in exps])
    mask = torch.cat([torch.nn.functional.pad(e.action_mask, (0, width - e.action_mask.shape[1])) for e in exps])
    _, want_tau = high_entropy_mask(ent, mask, 0.3)
    entry = saver.save_step(2, exps)
    assert entry["high_entropy_threshold"] == pytest.approx(want_tau)
    for rec in load_trajectories(tmp_path / "trajectories"):
        assert rec["high_entropy_threshold"] == pytest.approx(want_tau)
        for t in rec["pure_generated_tokens"]:
            assert t["high_entropy"] == (t["entropy_score"] >= want_tau - 1e-7)


def test_groups_sampling_keeps_prompt_groups_together(tmp_path, tokenizer):
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "4", "--trajectory_sampling", "groups")
    saver.save_step(1, step_experiences(tokenizer))
    records = load_trajectories(tmp_path / "trajectories")
    by_group = {}
    for r in records:
        by_group.setdefault(r["group_index"], []).append(r["prompt_text"])
    # two whole groups of two responses to the same prompt
    assert sorted(len(v) for v in by_group.values()) == [2, 2]
    assert all(len(set(v)) == 1 for v in by_group.values())


def test_sampling_is_seeded_and_reproducible(tmp_path, tokenizer):
    picks = []
    for run in range(2):
        saver = make_saver(tmp_path / str(run), tokenizer, "--num_trajectories_to_save", "3", "--trajectory_sampling", "random")
        saver.save_step(5, step_experiences(tokenizer))
        picks.append([(r["experience_index"], r["sample_in_exp"]) for r in load_trajectories(tmp_path / str(run))])
    assert picks[0] == picks[1] and len(picks[0]) == 3


def test_non_finite_values_become_null_and_files_stay_strict_json(tmp_path, tokenizer):
    exps = step_experiences(tokenizer)
    exps[0].action_entropy[0, 0] = float("nan")
    exps[0].action_entropy[0, 1] = float("inf")
    exps[0].info["reward"] = torch.tensor([float("nan"), 0.0, 1.0, float("-inf")])
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "8", "--trajectory_sampling", "first")
    saver.save_step(1, exps)
    raw = (tmp_path / "trajectories" / "trajectories_step_1.json").read_bytes()
    records = orjson.loads(raw)  # orjson is strict: no NaN/Infinity literals
    first = records[0]
    assert first["info"]["reward"] is None
    assert first["pure_generated_tokens"][0]["entropy_score"] is None and not first["pure_generated_tokens"][0]["high_entropy"]
    assert first["pure_generated_tokens"][1]["entropy_score"] is None


def test_edge_cases_empty_responses_single_token_ratio_one(tmp_path, tokenizer):
    exp = make_experience(tokenizer, ["Q: 1 + 1 = ?", "Q: 2 + 2 = ?", "Q: 3 = ?"], ["", "4", ""], pad_response_to=3)
    saver = make_saver(tmp_path, tokenizer, "--high_entropy_token_ratio", "1.0")
    entry = saver.save_step(1, [exp])
    records = load_trajectories(tmp_path / "trajectories")
    assert entry["num_response_tokens"] == 1 and len(records) == 3
    lengths = sorted(r["info"]["response_length"] for r in records)
    assert lengths == [0, 0, 1]
    (one,) = [r for r in records if r["pure_generated_tokens"]]
    assert one["pure_generated_tokens"][0]["high_entropy"] is True
    # a step where every row is masked
    exp.action_mask[:] = False
    entry = saver.save_step(2, [exp])
    assert entry["num_response_tokens"] == 0 and entry["high_entropy_threshold"] is None
    assert load_trajectories(tmp_path / "trajectories" / "trajectories_step_2.json")


def test_missing_optional_fields_degrade(tmp_path, tokenizer):
    exp = make_experience(tokenizer, PROMPTS[:2], RESPONSES[:2])
    for name in ("action_entropy", "action_log_probs", "returns", "labels", "prompts", "attention_mask"):
        delattr(exp, name)
    exp.info = {"reward": [0.0, 1.0]}
    saver = make_saver(tmp_path, tokenizer)
    saver.save_step(1, [exp])
    records = load_trajectories(tmp_path / "trajectories")
    assert all(t["entropy_score"] is None and not t["high_entropy"] for r in records for t in r["pure_generated_tokens"])
    assert all(r["return"] is None for r in records)


def test_a_write_failure_warns_and_training_goes_on(tmp_path, tokenizer, caplog):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the output folder should be")
    saver = make_saver(tmp_path, tokenizer, "--trajectory_dir", str(blocker / "trajectories"))
    with caplog.at_level(logging.WARNING):
        assert saver.save_step(1, step_experiences(tokenizer)) is None
        assert saver.save_step(2, step_experiences(tokenizer)) is None
    assert "step 1 not saved" in caplog.text and "--trajectory_strict" in caplog.text
    assert "step 2" not in caplog.text  # one warning, not one per step
    blocker.unlink()  # the disk is usable again
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert saver.save_step(3, step_experiences(tokenizer))["global_step"] == 3
    assert "saving again from step 3, after 2 step(s)" in caplog.text
    other_blocker = tmp_path / "also_not_a_dir"
    other_blocker.write_text("x")
    strict = make_saver(tmp_path, tokenizer, "--trajectory_dir", str(other_blocker / "trajectories"), "--trajectory_strict")
    with pytest.raises(OSError):
        strict.save_step(1, step_experiences(tokenizer))


def test_save_steps_and_resaving_a_step_leaves_one_manifest_line(tmp_path, tokenizer):
    saver = make_saver(tmp_path, tokenizer, "--trajectory_save_steps", "2")
    for step in (1, 2, 3, 4):
        saver.save_step(step, step_experiences(tokenizer, seed=step))
    saver.save_step(4, step_experiences(tokenizer, seed=9))  # a resumed run repeats step 4
    steps = [e["global_step"] for e in read_manifest(tmp_path / "trajectories" / "manifest.jsonl")]
    assert steps == [2, 4]
    assert sorted(p.name for p in (tmp_path / "trajectories").glob("trajectories_step_*.json")) == [
        "trajectories_step_2.json", "trajectories_step_4.json"]


def test_npz_trace_holds_every_response(tmp_path, tokenizer):
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "1", "--save_entropy_trace")
    exps = step_experiences(tokenizer)
    saver.save_step(7, exps)
    with np.load(tmp_path / "trajectories" / "steps" / "step_000007.npz") as z:
        assert z["entropies"].dtype == np.float16 and z["responses"].dtype == np.int32
        assert z["entropies"].shape == z["response_mask"].shape == z["responses"].shape
        assert z["response_index"].tolist() == list(range(8))
        assert int(z["response_mask"].sum()) == sum(int(e.action_mask.sum()) for e in exps)
        row = 5  # experience 1, sample 1
        n = int(exps[1].action_mask[1].sum())
        assert z["responses"][row, :n].tolist() == exps[1].sequences[1, -exps[1].action_mask.shape[1]:][:n].tolist()
        assert np.allclose(z["entropies"][row, :n], exps[1].action_entropy[1, :n].numpy(), atol=2e-3)
        assert z["uid"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
        assert z["sample_index"].tolist() == [0, 1] * 4


def test_resuming_forgets_the_steps_after_the_checkpoint(tmp_path, tokenizer):
    """A run that crashed after step 2's checkpoint, while on step 4, resumes at step 3."""
    saver = make_saver(tmp_path, tokenizer, "--save_entropy_trace")
    for step in (1, 2, 3, 4):
        saver.save_step(step, step_experiences(tokenizer, seed=step))
    out = tmp_path / "trajectories"
    with open(out / "manifest.jsonl", "ab") as f:
        f.write(b'{"note": "a line of another tool"}\n')
    removed = saver.forget_steps_after(2)
    assert sorted(Path(p).name for p in removed) == [
        "step_000003.npz", "step_000004.npz", "trajectories_step_3.json", "trajectories_step_4.json"]
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [e.get("global_step") for e in lines] == [1, 2, None]
    saver.save_step(3, step_experiences(tokenizer, seed=30))
    assert [e["global_step"] for e in read_manifest(out / "manifest.jsonl") if "global_step" in e] == [1, 2, 3]


def test_forks_sampling_saves_the_groups_with_the_most_marked_tokens(tmp_path, tokenizer):
    exps = step_experiences(tokenizer)
    # prompt group 3 (experience 1, samples 2-3) holds the step's highest entropies
    exps[1].action_entropy[2:] = exps[1].action_entropy[2:] + 10 * exps[1].action_mask[2:]
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "2", "--trajectory_sampling", "forks")
    saver.save_step(1, exps)
    records = load_trajectories(tmp_path / "trajectories")
    assert [(r["experience_index"], r["sample_in_exp"]) for r in records] == [(1, 2), (1, 3)]
    assert all(any(t["high_entropy"] for t in r["pure_generated_tokens"]) for r in records)


@pytest.mark.parametrize("width", ["sequence", "short"])
def test_a_per_token_tensor_of_the_wrong_width_is_refused_naming_both_shapes(tmp_path, width):
    """action_entropy of shape (B, S) instead of (B, A) used to be cropped to its first A columns
    (entropies of the wrong positions), a too-short one padded with nulls, and validate said OK.
    Now it is an error that names both shapes, and nothing is written."""
    from openrlhf_ext.trajectory import ExperienceLayoutError
    from openrlhf_ext.trajectory.toy import toy_experience, toy_tokenizer

    tok = toy_tokenizer()
    exp = toy_experience(tok, ["1+1=", "2+2="], ["2", "10"])
    b, s = exp.sequences.shape
    a = exp.action_mask.shape[1]
    exp.action_entropy = torch.rand(b, s) if width == "sequence" else torch.rand(b, a - 1)
    saver = TrajectorySaver(tmp_path / "run", tok, strict=True)
    with pytest.raises(ExperienceLayoutError, match=rf"action_entropy is \({b}, {exp.action_entropy.shape[1]}\) "
                                                    rf"but action_mask is \({b}, {a}\)"):
        saver.save_step(1, [exp])
    assert not (tmp_path / "run").exists()
