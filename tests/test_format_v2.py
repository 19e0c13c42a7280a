"""Format version 2 as the saver writes it and the tools read it: alternatives, rollout_logprob,
prompt_id, probe files and the new manifest keys; `validate` accepts them (and the shared fixture)
and catches each fault; the lenient reader, `stats` and `report` carry them.

The saver's side runs on real tokenizers and experiences built here (no Ray); the training job
writing the same files is tests/test_train_hf.py and tests/test_train_vllm.py."""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from openrlhf_ext.trajectory import high_entropy_mask, load_trajectories
from openrlhf_ext.trajectory.alternatives import token_alone_texts
from openrlhf_ext.trajectory.files import read_manifest
from openrlhf_ext.trajectory.format.reading import check_trajectories
from openrlhf_ext.trajectory.manifest_entry import fork_word
from openrlhf_ext.trajectory.records import prompt_id
from openrlhf_ext.trajectory.tools.cli import main as cli_main
from openrlhf_ext.trajectory.tools.stats import format_table, step_rows
from tests.conftest import make_experience
from tests.test_saver import PROMPTS, RESPONSES, make_saver

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "v2_trajectories_step_5.json"
HEX = re.compile(r"<0x([0-9A-F]{2})>")


def v2_experiences(tokenizer, seed=0, top_k=6):
    """Two experiences of 4 responses with rollout log-probs and `top_k` alternatives per token."""
    return [make_experience(tokenizer, [PROMPTS[2 * e]] * 2 + [PROMPTS[2 * e + 1]] * 2, RESPONSES, seed=seed + e,
                            rewards=[1.0, 0.0, 0.5, 1.0], rollout_log_probs=True, top_k=top_k) for e in range(2)]


def saved(tmp_path, tokenizer, exps, *flags, step=1, probes=None):
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "8", "--high_entropy_token_ratio", "0.25",
                       *flags)
    entry = saver.save_step(step, exps, probes=probes)
    return saver, entry, load_trajectories(tmp_path / "trajectories")


def token_slots(rec, exps):
    """(experience, row, response slots) of a record: its tokens are the experience's real slots."""
    exp = exps[rec["experience_index"]]
    i = rec["sample_in_exp"]
    return exp, i, exp.action_mask[i].nonzero().squeeze(-1).tolist()


# ----------------------------------------------------------------------------- alternatives

def test_alternative_texts_are_the_tokens_own_with_partial_bytes_as_hex(tokenizer):
    """Every id of a byte-level vocabulary: the text, with each <0xNN> read back as its byte, is the
    token's bytes; a token whose bytes are whole characters reads as decode([id]) gives it."""
    from openrlhf_ext.trajectory.texts_table import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    ids = list(range(len(tokenizer)))
    texts = token_alone_texts(tokenizer, ids)
    partial = 0
    for i, text in zip(ids, texts):
        token = tokenizer.convert_ids_to_tokens(i)
        if i in tokenizer.all_special_ids:
            assert text == token
            continue
        raw = bytes(byte_of[c] for c in token)
        parts = HEX.split(text)  # text, byte, text, byte, ...
        rebuilt = b"".join(p.encode() if k % 2 == 0 else bytes([int(p, 16)]) for k, p in enumerate(parts))
        assert rebuilt == raw and "\ufffd" not in text, (i, token, text)
        try:
            assert text == tokenizer.decode([i]) == raw.decode("utf-8")
        except UnicodeDecodeError:
            partial += 1
            assert HEX.search(text)
    assert partial > 10  # the corpus' CJK and emoji give tokens that split characters


def test_alternatives_on_marked_tokens_are_the_experiences_top_k(tmp_path, tokenizer):
    exps = v2_experiences(tokenizer)
    _, entry, records = saved(tmp_path, tokenizer, exps, "--save_top_k_alternatives", "3")
    n_alts = 0
    for rec in records:
        exp, i, slots = token_slots(rec, exps)
        for t, j in zip(rec["pure_generated_tokens"], slots):
            assert ("alternatives" in t) == t["high_entropy"]  # --alternatives_for high (default)
            if not t["high_entropy"]:
                continue
            n_alts += 1
            ids = exp.alternative_ids[i, j, :3].tolist()
            assert [a["id"] for a in t["alternatives"]] == ids
            assert [a["logprob"] for a in t["alternatives"]] == pytest.approx(exp.alternative_log_probs[i, j, :3].tolist())
            assert [a["text"] for a in t["alternatives"]] == token_alone_texts(tokenizer, ids)
        # generated_tokens' response tokens carry the same alternatives
        gen = [t for t in rec["generated_tokens"] if not t.get("prompt")]
        assert [t.get("alternatives") for t in gen] == [t.get("alternatives") for t in rec["pure_generated_tokens"]]
    assert n_alts >= 4
    assert check_trajectories(tmp_path / "trajectories").problems == []


def test_alternatives_for_all_or_none(tmp_path, tokenizer):
    exps = v2_experiences(tokenizer)
    _, _, records = saved(tmp_path / "all", tokenizer, exps, "--alternatives_for", "all")
    tokens = [t for r in records for t in r["pure_generated_tokens"]]
    assert all(len(t["alternatives"]) == 5 for t in tokens)  # the default K of 5 (the experiences hold 6)
    _, _, records = saved(tmp_path / "none", tokenizer, exps, "--save_top_k_alternatives", "0")
    assert not any("alternatives" in t for r in records for t in r["pure_generated_tokens"])


def test_experiences_without_v2_fields_give_v1_tokens(tmp_path, tokenizer):
    """Other trainers' experiences carry neither rollout log-probs nor alternatives: no such keys,
    no logprob_mismatch, and the files are valid; prompt_id and the other v2 keys are there."""
    exps = [make_experience(tokenizer, PROMPTS, RESPONSES, seed=1)]
    _, entry, records = saved(tmp_path, tokenizer, exps)
    tokens = [t for r in records for t in r["generated_tokens"]]
    assert not any("alternatives" in t or "rollout_logprob" in t for t in tokens)
    assert "logprob_mismatch" not in entry and "probe_file" not in entry
    assert entry["file_bytes"] == (tmp_path / "trajectories" / entry["file"]).stat().st_size
    assert all(isinstance(r["prompt_id"], str) for r in records)
    assert cli_main(["validate", str(tmp_path / "trajectories")]) == 0


# ----------------------------------------------------------------------------- rollout log-probs, manifest

def test_rollout_logprob_on_every_response_token_and_the_steps_mismatch(tmp_path, tokenizer):
    exps = v2_experiences(tokenizer)
    saver, entry, records = saved(tmp_path, tokenizer, exps, "--num_trajectories_to_save", "3")
    for rec in records:
        exp, i, slots = token_slots(rec, exps)
        got = [t["rollout_logprob"] for t in rec["pure_generated_tokens"]]
        assert got == pytest.approx(exp.rollout_log_probs[i, slots].tolist(), abs=1e-7)
        assert all("rollout_logprob" not in t for t in rec["generated_tokens"] if t.get("prompt"))
    # the manifest's figures are over every response token of the step, not the 3 saved responses
    diff = torch.cat([(e.action_log_probs - e.rollout_log_probs)[e.action_mask] for e in exps]).abs().double()
    m = entry["logprob_mismatch"]
    assert m["mean_abs"] == pytest.approx(diff.mean().item()) and m["max_abs"] == pytest.approx(diff.max().item())
    assert m["p95_abs"] == pytest.approx(np.percentile(diff.numpy(), 95))
    assert read_manifest(saver.out_dir / "manifest.jsonl")[0]["logprob_mismatch"] == m


def test_fork_words_count_every_marked_token_of_the_step(tmp_path, tokenizer):
    exps = v2_experiences(tokenizer)
    _, entry, records = saved(tmp_path, tokenizer, exps, "--num_trajectories_to_save", "2")
    ent = torch.cat([e.action_entropy for e in exps])
    mask = torch.cat([e.action_mask for e in exps])
    marks, _ = high_entropy_mask(ent, mask, 0.25)
    ids = torch.cat([e.sequences[:, -e.action_mask.shape[1]:] for e in exps])[marks].tolist()
    expect = Counter(fork_word(tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(i)]))
                     for i in ids)
    assert sum(c for _, c in entry["fork_words"]) == int(marks.sum()) > sum(
        t["high_entropy"] for r in records for t in r["pure_generated_tokens"])  # more than the saved ones
    # where a token's bytes are whole characters its text is its decode: the counts agree there
    for word, count in entry["fork_words"]:
        if "<0x" not in word:
            assert expect[word] == count, word
    counts = [c for _, c in entry["fork_words"]]
    assert counts == sorted(counts, reverse=True) and len(counts) <= 50


def test_prompt_id_follows_a_prompt_across_steps(tmp_path, tokenizer):
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "8")
    saver.save_step(1, v2_experiences(tokenizer, seed=0))
    saver.save_step(2, v2_experiences(tokenizer, seed=5))
    records = load_trajectories(tmp_path / "trajectories")
    by_prompt = {}
    for r in records:
        by_prompt.setdefault(r["prompt_text"], set()).add(r["prompt_id"])
    assert len(by_prompt) == 4 and all(len(ids) == 1 for ids in by_prompt.values())  # one id per prompt
    assert len({next(iter(ids)) for ids in by_prompt.values()}) == 4  # four prompts, four ids
    for text, ids in by_prompt.items():
        assert ids == {prompt_id(tokenizer.encode(text))}  # the documented rule: a hash of the prompt ids


# ----------------------------------------------------------------------------- probe files

def test_probe_responses_are_saved_whole_with_the_steps_threshold(tmp_path, tokenizer):
    exps = v2_experiences(tokenizer)
    probes = [make_experience(tokenizer, ["Probe: 2 + 2 = ?"] * 3, ["4", "Four 🙂", "5, no: 4"], seed=9,
                              rewards=[1.0, 1.0, 0.0], rollout_log_probs=True, top_k=5)]
    saver, entry, records = saved(tmp_path, tokenizer, exps, step=3, probes=probes)
    assert entry["probe_file"] == "probes_step_3.json"
    assert all("probe" not in r for r in records)  # load_trajectories reads step files only
    probe_records = json.loads((tmp_path / "trajectories" / "probes_step_3.json").read_text())
    assert len(probe_records) == 3 and all(r["probe"] is True and r["global_step"] == 3 for r in probe_records)
    tau = entry["high_entropy_threshold"]
    for r in probe_records:
        exp, i, slots = token_slots(r, probes)
        assert r["high_entropy_threshold"] == tau and r["pure_generated_text"] == ["4", "Four 🙂", "5, no: 4"][i]
        for t, j in zip(r["pure_generated_tokens"], slots):
            assert t["high_entropy"] == (exp.action_entropy[i, j].item() >= tau)  # the step's threshold, not theirs
            assert ("alternatives" in t) == t["high_entropy"]
        assert len({r["prompt_id"] for r in probe_records}) == 1
    checked = check_trajectories(tmp_path / "trajectories")
    assert checked.problems == [] and len(checked.files) == 2 and checked.num_records == 8 + 3


def test_validate_names_a_probe_file_without_manifest_line(tmp_path, tokenizer, capsys):
    probes = [make_experience(tokenizer, ["Probe?"], ["Yes"], seed=2)]
    saver, _, _ = saved(tmp_path, tokenizer, v2_experiences(tokenizer), step=1, probes=probes)
    folder = tmp_path / "trajectories"
    (folder / "probes_step_1.json").rename(folder / "probes_step_7.json")  # a probe file no line names
    assert cli_main(["validate", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "probes_step_7.json: a probe file that no manifest.jsonl line names" in out
    assert "step 1: its probe_file probes_step_1.json is missing" in out
    assert cli_main(["stats", str(folder)]) == 0  # stats opens the rest, with a notice
    assert "notice: " + str(folder / "probes_step_7.json") in capsys.readouterr().err


# ----------------------------------------------------------------------------- validate

def test_validate_accepts_the_shared_v2_fixture(capsys):
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} is not here")
    assert cli_main(["validate", str(FIXTURE)]) == 0, capsys.readouterr().out


def _fixture_records():
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} is not here")
    return json.loads(FIXTURE.read_text())


def _marked(records):
    return next(t for t in records[0]["pure_generated_tokens"] if "alternatives" in t)


FAULTS = [
    ("alternatives not sorted", lambda t: t["alternatives"].reverse(), "alternatives go most probable first"),
    ("an alternative's logprob above 0", lambda t: t["alternatives"][0].update(logprob=0.5), "<= 0"),
    ("alternatives that are an object", lambda t: t.update(alternatives={"id": 1}), "must be an array"),
    ("an alternative without text", lambda t: t["alternatives"][1].pop("text"), "missing"),
    ("an alternative id that is a string", lambda t: t["alternatives"][1].update(id="7"), "must be an integer"),
    ("a rollout_logprob that is a string", lambda t: t.update(rollout_logprob="-0.5"), "must be a number or null"),
    ("a rollout_logprob above 0", lambda t: t.update(rollout_logprob=0.25), "<= 0"),
]


@pytest.mark.parametrize("name, damage, message", FAULTS, ids=[f[0] for f in FAULTS])
def test_validate_catches_each_v2_fault(tmp_path, capsys, name, damage, message):
    records = _fixture_records()
    damage(_marked(records))
    path = tmp_path / "trajectories_step_5.json"
    path.write_text(json.dumps(records))
    assert cli_main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "record 0: pure_generated_tokens[" in out and message in out, out


def test_validate_catches_record_faults_and_more_alternatives_than_the_runs_k(tmp_path, tokenizer, capsys):
    _, _, _ = saved(tmp_path, tokenizer, v2_experiences(tokenizer), "--save_top_k_alternatives", "3")
    folder = tmp_path / "trajectories"
    path = folder / "trajectories_step_1.json"
    records = orjson.loads(path.read_bytes())
    token = next(t for t in records[0]["pure_generated_tokens"] if "alternatives" in t)
    token["alternatives"].append({"id": 1, "text": "x", "logprob": token["alternatives"][-1]["logprob"] - 1})
    records[1]["prompt_id"] = 12
    records[2]["probe"] = "yes"
    path.write_bytes(orjson.dumps(records))
    assert cli_main(["validate", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "has 4 alternatives, more than the run's K = 3" in out  # the K of the run's summary.json
    assert "record 1: prompt_id: must be a string" in out and "record 2: probe: must be true or false" in out


def test_a_nan_rollout_logprob_is_named(tmp_path, capsys):
    records = _fixture_records()
    path = tmp_path / "trajectories_step_5.json"
    path.write_text(json.dumps(records).replace('"rollout_logprob": -0.97', '"rollout_logprob": NaN'))
    assert cli_main(["validate", str(path)]) == 1
    assert "non-standard JSON literal NaN" in capsys.readouterr().out
    assert cli_main(["stats", str(path)]) == 0  # opens, and says which record
    err = capsys.readouterr().err
    assert "record 0: pure_generated_tokens[2].rollout_logprob: rollout_logprob null (not finite when saved)" in err


# ----------------------------------------------------------------------------- stats, report

def test_stats_shows_the_mismatch_and_the_whole_steps_fork_words(tmp_path, tokenizer):
    exps = v2_experiences(tokenizer)
    _, entry, _ = saved(tmp_path, tokenizer, exps, "--num_trajectories_to_save", "2")
    (row,) = step_rows(tmp_path / "trajectories", top_words=3)
    assert row["mismatch_mean"] == entry["logprob_mismatch"]["mean_abs"]
    assert row["mismatch_p95"] == entry["logprob_mismatch"]["p95_abs"]
    assert [list(w) for w in row["fork_words"]] == entry["fork_words"][:3]
    heading = format_table([row])[0]
    assert "mismatch" in heading and "mism p95" in heading
    plain = tmp_path / "plain"
    saved(plain, tokenizer, [make_experience(tokenizer, PROMPTS, RESPONSES)])
    assert "mismatch" not in format_table(step_rows(plain / "trajectories"))[0]  # no rollout log-probs: no columns


def test_report_carries_the_v2_fields(tmp_path, tokenizer):
    from openrlhf_ext.trajectory.tools.report import build_report
    from tests.test_report import STAND_IN, embedded_payload, embedded_records

    viewer = tmp_path / "viewer.html"
    viewer.write_text(STAND_IN)
    _, _, records = saved(tmp_path, tokenizer, v2_experiences(tokenizer))
    payload, _ = embedded_payload(build_report([tmp_path / "trajectories"], viewer=viewer)[0])
    by_name = {f["name"]: f for f in payload["files"]}
    assert embedded_records(by_name["trajectories_step_1.json"]) == records
    assert any("alternatives" in t for r in records for t in r["pure_generated_tokens"])
    assert json.loads(by_name["summary.json"]["data"])["format_version"] == 2
    assert math.isfinite(json.loads(by_name["manifest.jsonl"]["data"])["logprob_mismatch"]["mean_abs"])
