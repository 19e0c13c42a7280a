"""`openrlhf-traj convert`: npz entropy traces and rollout JSONL dumps into trajectory files.

Round trips check the converted files against what the core computes directly from the same
arrays (token_texts for the texts, high_entropy_mask over all responses of the step for the
marks). The tokenizer is a small byte-level BPE built here with `tokenizers`: nothing downloaded.
"""
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from openrlhf_ext.trajectory import TrajectorySaver, high_entropy_mask, load_trajectories, token_texts
from openrlhf_ext.trajectory.tools.cli import main as cli_main
from openrlhf_ext.trajectory.tools.convert import convert, load_tokenizer
from openrlhf_ext.trajectory.tools.convert_jsonl import word_chunks
from openrlhf_ext.trajectory.tools.stats import step_rows
from openrlhf_ext.trajectory.tools.errors import ConvertError
from tests.conftest import make_byte_level_tokenizer, make_experience


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """The shared byte-level BPE (emoji and CJK split over several tokens), saved as a folder so
    that it is passed to the converter by path, as a user would."""
    folder = tmp_path_factory.mktemp("tokenizer")
    make_byte_level_tokenizer().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


def write_step(folder: Path, step: int, arrays: dict, compressed=True):
    (folder / "steps").mkdir(parents=True, exist_ok=True)
    path = folder / "steps" / f"step_{step:06d}.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def random_step(rng, tokenizer, num_responses=8, length=24, text_rows=()):
    """Arrays of one step in the trace layout. Rows in `text_rows` hold real text (emoji, CJK);
    the others random ids. Entropies have ties, NaN and inf; responses are right-padded."""
    vocab = len(tokenizer)
    responses = rng.integers(0, vocab, (num_responses, length)).astype(np.int32)
    lengths = rng.integers(1, length + 1, num_responses)
    for row, text in text_rows:
        ids = tokenizer.encode(text)[:length]
        responses[row, : len(ids)] = ids
        lengths[row] = len(ids)
    mask = np.arange(length)[None, :] < lengths[:, None]
    responses[~mask] = 0  # padding
    entropies = (rng.random((num_responses, length)) * 3).astype(np.float16)
    entropies[0, 0] = np.nan
    entropies[1, 0] = np.inf
    entropies[2, :4] = 1.5  # ties
    return {
        "entropies": entropies,
        "response_mask": mask,
        "responses": responses,
        "response_index": np.arange(num_responses, dtype=np.int32),
        "rewards": rng.random(num_responses).astype(np.float32),
        "advantages": rng.standard_normal((num_responses, length)).astype(np.float32),
        "uid": np.array([f"prompt-{i // 2}" for i in range(num_responses)]),
        "prompt_length": np.full(num_responses, 7, dtype=np.int32),
    }


def expected_marks(arrays, ratio):
    marks, threshold = high_entropy_mask(
        torch.from_numpy(arrays["entropies"].astype(np.float32)), torch.from_numpy(arrays["response_mask"]), ratio
    )
    return marks.numpy(), float(threshold)


def check_record(record, arrays, row, tokenizer, marks, threshold):
    keep = arrays["response_mask"][row]
    ids = arrays["responses"][row][keep].tolist()
    tokens = record["pure_generated_tokens"]
    assert [t["text"] for t in tokens] == token_texts(tokenizer, ids)
    assert [t["id"] for t in tokens] == ids
    assert record["pure_generated_text"] == "".join(t["text"] for t in tokens) == tokenizer.decode(ids)
    assert [t["high_entropy"] for t in tokens] == marks[row][keep].tolist()
    for token, value in zip(tokens, arrays["entropies"][row][keep].tolist()):
        assert token["entropy_score"] == (value if math.isfinite(value) else None)
    assert record["high_entropy_threshold"] == pytest.approx(threshold)
    assert record["info"]["reward"] == pytest.approx(float(arrays["rewards"][row]))
    assert record["info"]["response_length"] == len(ids)
    adv = arrays["advantages"][row][keep].astype(np.float64).mean()
    assert record["advantages"] == pytest.approx(adv)
    assert record["group_index"] == row // 2


def test_npz_round_trip_same_texts_and_marks_as_computed_directly(tmp_path, tokenizer, tokenizer_dir):
    rng = np.random.default_rng(0)
    texts = [(3, "数学问题 😀 🎉 café"), (4, "<script>alert(1)</script> &amp; \u2028 wait")]
    steps = {s: random_step(rng, tokenizer, text_rows=texts) for s in (1, 2, 10)}
    # Step 2: the highest entropies sit in rows the conversion leaves out, so marks computed over
    # the kept rows alone would differ from FORMAT.md's marks over all responses.
    steps[2]["entropies"][5:] = 9.0
    for s, arrays in steps.items():
        write_step(tmp_path / "trace", s, arrays)
    out = tmp_path / "out"
    result = convert(tmp_path / "trace", out, tokenizer=str(tokenizer_dir), high_entropy_token_ratio=0.25,
                     num_trajectories_per_step=5)
    assert result["kind"] == "npz" and result["steps"] == [1, 2, 10]

    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["global_step"] for m in manifest] == [1, 2, 10]
    for entry in manifest:
        arrays = steps[entry["global_step"]]
        marks, threshold = expected_marks(arrays, 0.25)
        records = load_trajectories(out / entry["file"])  # the core's validating reader accepts it
        assert len(records) == entry["num_saved"] == 5
        assert entry["file_bytes"] == (out / entry["file"]).stat().st_size
        assert entry["num_responses"] == 8
        assert entry["num_response_tokens"] == int(arrays["response_mask"].sum())
        assert entry["high_entropy_threshold"] == pytest.approx(threshold)
        for row, record in enumerate(records):
            assert record["global_step"] == entry["global_step"]
            check_record(record, arrays, row, tokenizer, marks, threshold)
    kept_only, _ = high_entropy_mask(torch.from_numpy(steps[2]["entropies"][:5].astype(np.float32)),
                                     torch.from_numpy(steps[2]["response_mask"][:5]), 0.25)
    assert not np.array_equal(kept_only.numpy(), expected_marks(steps[2], 0.25)[0][:5])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format_version"] == 2 and summary["generator"] == "openrlhf_ext"
    assert summary["latest_step"] == 10 and summary["num_steps_written"] == 3


def test_saver_trace_round_trip_gives_the_savers_records(tmp_path, tokenizer, tokenizer_dir):
    """save (10 of them, with --save_entropy_trace) -> trace -> convert (all of them): the
    responses the saver kept come out with the saver's texts, marks, entropies and threshold."""
    prompts = ["What is 6 * 7?", "What is 6 * 7?", "Compute 12 + 30.", "Compute 12 + 30."]
    responses = ["The answer is 42. 🙂🚀", "Wait, maybe 6 * 7 = 41.", "我们来计算一下：三加四等于七。", "42 \n\tcafé naïve"]
    experiences = [make_experience(tokenizer, prompts, responses, seed=s) for s in (0, 1)]
    experiences.append(make_experience(tokenizer, prompts[:2], responses[2:], seed=2, pad_response_to=40))
    for exp in experiences:
        # The trace stores float16; entropies that float16 holds exactly make the saver's float32
        # ranking and the trace's the same (otherwise rounding may add ties at the threshold).
        exp.action_entropy = exp.action_entropy.half().float()
    run = tmp_path / "run"
    saver = TrajectorySaver(run, tokenizer, num_to_save=4, ratio=0.3, sampling="random", save_trace=True,
                            run_info={"tokenizer": str(tokenizer_dir)})
    saver.save_step(5, experiences)
    assert (run / "steps" / "step_000005.npz").is_file()

    # No --tokenizer: our summary.json names it.
    convert(run, tmp_path / "all", high_entropy_token_ratio=0.3)
    converted = load_trajectories(tmp_path / "all" / "trajectories_step_5.json")
    assert len(converted) == 10  # every response of the step, not only the 4 saved
    offsets = [0, 4, 8]
    saved = load_trajectories(run / "trajectories_step_5.json")
    assert len(saved) == 4
    for record in saved:
        mine = converted[offsets[record["experience_index"]] + record["sample_in_exp"]]
        for key in ("text", "high_entropy", "entropy_score", "id"):
            assert [t[key] for t in mine["pure_generated_tokens"]] == [t[key] for t in record["pure_generated_tokens"]]
        assert mine["pure_generated_text"] == record["pure_generated_text"]
        assert mine["high_entropy_threshold"] == record["high_entropy_threshold"]
        assert mine["group_index"] == record["group_index"]
        assert mine["info"]["reward"] == record["info"]["reward"]
        assert mine["advantages"] == pytest.approx(record["advantages"], rel=1e-6)
        assert mine["info"]["prompt_length"] == len([t for t in record["generated_tokens"] if t.get("prompt")])
    saver_manifest = json.loads((run / "manifest.jsonl").read_text())
    my_manifest = json.loads((tmp_path / "all" / "manifest.jsonl").read_text())
    for key in ("num_responses", "num_response_tokens", "high_entropy_threshold", "reward_mean"):
        assert my_manifest[key] == pytest.approx(saver_manifest[key]), key
    assert my_manifest["entropy"] == pytest.approx(saver_manifest["entropy"])
    # the whole step's fork words, from every response of the trace as the saver counted them
    assert saver_manifest["fork_words"] and my_manifest["fork_words"] == saver_manifest["fork_words"]


def test_converted_step_files_get_the_manifests_fork_words_and_mismatch(tmp_path):
    """Step files of another saver (no manifest of their own): the converted manifest counts the
    fork words of their marked tokens and the train-inference mismatch of their tokens, so the
    viewer's across-steps views and `stats` show them as for a run of ours."""
    def tok(text, high, lp=None, rlp=None):
        t = {"text": text, "high_entropy": high, "entropy_score": 1.0 if high else 0.1}
        if lp is not None:
            t["logprob"] = lp
        if rlp is not None:
            t["rollout_logprob"] = rlp
        return t

    records = [
        {"global_step": 3, "pure_generated_tokens": [tok(" Wait", True, -1.0, -1.25), tok(",", False, -0.1, -0.1),
                                                     tok("Wait", True, -2.0, -2.5)], "info": {"reward": 1.0}},
        {"global_step": 3, "pure_generated_tokens": [tok(" So", True, -0.5), tok(" 4", False)], "info": {"reward": 0.0}},
    ]
    src = tmp_path / "other"
    src.mkdir()
    (src / "trajectories_step_3.json").write_text(json.dumps(records))
    convert(src, tmp_path / "out")
    entry = json.loads((tmp_path / "out" / "manifest.jsonl").read_text())
    assert entry["fork_words"] == [["Wait", 2], ["So", 1]]  # " Wait" and "Wait" are one word
    # |diff| over the 3 tokens that carry both: 0.25, 0, 0.5
    assert entry["logprob_mismatch"]["mean_abs"] == pytest.approx(0.25)
    assert entry["logprob_mismatch"]["max_abs"] == pytest.approx(0.5)
    row, = step_rows(tmp_path / "out")
    assert row["fork_words"][:2] == [("Wait", 2), ("So", 1)] and row["mismatch_mean"] == pytest.approx(0.25)

    # files with no marks and no rollout log-probs: neither key (FORMAT.md: written when known)
    for r in records:
        for t in r["pure_generated_tokens"]:
            t["high_entropy"] = False
            t.pop("rollout_logprob", None)
    (src / "trajectories_step_3.json").write_text(json.dumps(records))
    convert(src, tmp_path / "plain")
    entry = json.loads((tmp_path / "plain" / "manifest.jsonl").read_text())
    assert "fork_words" not in entry and "logprob_mismatch" not in entry


def test_npz_steps_folder_uncompressed_and_step_selection(tmp_path, tokenizer):
    rng = np.random.default_rng(1)
    arrays = {s: random_step(rng, tokenizer) for s in (3, 4, 5)}
    for s, a in arrays.items():
        write_step(tmp_path / "trace", s, a, compressed=False)
    result = convert(tmp_path / "trace" / "steps", tmp_path / "out", tokenizer=tokenizer, steps="4-9")
    assert result["steps"] == [4, 5]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.jsonl", "summary.json", "trajectories_step_4.json", "trajectories_step_5.json"]
    assert len(load_trajectories(tmp_path / "out" / "trajectories_step_4.json")) == 8


def test_response_scope_marks_inside_each_response(tmp_path, tokenizer):
    rng = np.random.default_rng(2)
    arrays = random_step(rng, tokenizer)
    write_step(tmp_path / "trace", 1, arrays)
    convert(tmp_path / "trace", tmp_path / "out", tokenizer=tokenizer, high_entropy_token_ratio=0.3,
            high_entropy_scope="response")
    marks, thresholds = high_entropy_mask(torch.from_numpy(arrays["entropies"].astype(np.float32)),
                                          torch.from_numpy(arrays["response_mask"]), 0.3, scope="response")
    records = load_trajectories(tmp_path / "out" / "trajectories_step_1.json")
    for row, record in enumerate(records):
        keep = arrays["response_mask"][row]
        assert [t["high_entropy"] for t in record["pure_generated_tokens"]] == marks.numpy()[row][keep].tolist()
        assert record["high_entropy_threshold"] == pytest.approx(float(thresholds[row]))


def write_jsonl(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_jsonl_rollouts_become_unmarked_text_records(tmp_path):
    src = tmp_path / "rollouts"
    src.mkdir()
    hostile = "</script><!-- 😀\n\n  x\t y  "
    write_jsonl(src / "2.jsonl", [{"input": "Q: 2+2?\n", "output": f" 4. {hostile}", "score": 1.0, "step": 2},
                                  {"input": "Q: 3+3?\n", "output": "6", "score": 0, "step": 2, "gts": "6"}])
    write_jsonl(src / "10.jsonl", [{"input": "Q", "output": "A", "score": None, "step": 10}])
    (src / "manifest.jsonl").write_text('{"not": "a rollout"}\n')  # ignored by name
    result = convert(src, tmp_path / "out")
    assert result["kind"] == "jsonl" and result["steps"] == [2, 10]
    records = load_trajectories(tmp_path / "out" / "trajectories_step_2.json")
    first = records[0]
    assert first["pure_generated_text"] == f" 4. {hostile}"
    assert first["generated_text"] == "Q: 2+2?\n" + first["pure_generated_text"]
    assert "".join(t["text"] for t in first["generated_tokens"]) == first["generated_text"]
    assert "".join(t["text"] for t in first["pure_generated_tokens"]) == first["pure_generated_text"]
    prompt = [t for t in first["generated_tokens"] if t.get("prompt")]
    assert "".join(t["text"] for t in prompt) == "Q: 2+2?\n"
    assert all(not t["high_entropy"] and t["entropy_score"] is None for t in first["generated_tokens"])
    assert [r["info"]["reward"] for r in records] == [1.0, 0.0]
    assert [t["text"] for t in first["pure_generated_tokens"]][:3] == [" 4.", " </script><!--", " 😀"]
    manifest = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [(m["global_step"], m["num_responses"], m["reward_mean"]) for m in manifest] == [(2, 2, 0.5), (10, 1, None)]


def test_docstring_examples():
    import doctest

    from openrlhf_ext.trajectory.tools import convert as convert_mod
    from openrlhf_ext.trajectory.tools import convert_jsonl, convert_npz

    for module in (convert_mod, convert_npz, convert_jsonl):
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0, module.__name__


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \t\n\r\u2028ab.😀数\x00")), max_size=30))
def test_word_chunks_join_back_and_hold_at_most_one_word(text):
    chunks = word_chunks(text)
    assert "".join(chunks) == text
    assert all(chunks)
    assert all(len(c.split()) <= 1 for c in chunks)


# ----------------------------------------------------------------------------- broken inputs

def _good(rng, tokenizer):
    return random_step(rng, tokenizer, num_responses=4, length=8)


def _broken_cases():
    def missing_key(folder, a):
        a.pop("responses")
        write_step(folder, 2, a)
        return r"step_000002\.npz: missing array\(s\) responses"

    def truncated(folder, a):
        path = write_step(folder, 2, a)
        path.write_bytes(path.read_bytes()[:200])
        return r"step_000002\.npz: not a readable npz file"

    def shapes(folder, a):
        a["response_mask"] = a["response_mask"][:, :3]
        write_step(folder, 2, a)
        return r"step_000002\.npz: 'response_mask' has shape \(4, 3\)"

    def out_of_vocab(folder, a):
        a["responses"][1, 0] = 10**6
        write_step(folder, 2, a)
        return r"step_000002\.npz: response row 1 has token id 1000000, outside the tokenizer's vocabulary"

    def float_ids(folder, a):
        a["responses"] = a["responses"].astype(np.float32)
        write_step(folder, 2, a)
        return r"step_000002\.npz: 'responses' has dtype float32"

    def not_zip(folder, a):
        (folder / "steps" / "step_000002.npz").write_text("hello")
        return r"step_000002\.npz: not a readable npz file"

    def huge_header(folder, a):
        # A header that declares terabytes in a file of a few bytes: refused before allocating.
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f2", "fortran_order": False, "shape": (10**7, 10**6)})
        with zipfile.ZipFile(folder / "steps" / "step_000002.npz", "w") as z:
            for key in ("entropies", "response_mask", "responses", "response_index"):
                z.writestr(key + ".npy", header.getvalue() + b"\0" * 64)
        return r"step_000002\.npz: its arrays declare \d+\.\d GiB in all, more than the 2\.0 GiB a step may hold"

    return [missing_key, truncated, shapes, out_of_vocab, float_ids, not_zip, huge_header]


@pytest.mark.parametrize("breaker", _broken_cases(), ids=lambda f: f.__name__)
def test_broken_npz_step_is_named_and_earlier_steps_stay_written(tmp_path, tokenizer, breaker):
    rng = np.random.default_rng(3)
    write_step(tmp_path / "trace", 1, _good(rng, tokenizer))
    pattern = breaker(tmp_path / "trace", _good(rng, tokenizer))
    with pytest.raises(ConvertError, match=pattern):
        convert(tmp_path / "trace", tmp_path / "out", tokenizer=tokenizer)
    # Streaming: step 1 was written (atomically, valid) before step 2 was read.
    assert len(load_trajectories(tmp_path / "out" / "trajectories_step_1.json")) == 4


def test_object_arrays_are_never_unpickled(tmp_path, tokenizer):
    rng = np.random.default_rng(4)
    arrays = _good(rng, tokenizer)
    arrays["uid"] = np.array([{"a": 1}, None, "x", 3], dtype=object)  # needs pickle to load
    write_step(tmp_path / "trace", 1, arrays)
    with pytest.warns(UserWarning, match="skipping array 'uid'"):
        convert(tmp_path / "trace", tmp_path / "out", tokenizer=tokenizer)
    assert load_trajectories(tmp_path / "out" / "trajectories_step_1.json")[0].get("group_index") is None


@pytest.mark.parametrize("lines, pattern", [
    (['{"input": "a", "output": "b", "score": 1, "step": 1}', "{not json"], r"1\.jsonl:2: not valid JSON"),
    (['{"input": "a", "output": "b", "score": 1, "step": 1}', '{"input": "a", "output": "b", "step": 1}'],
     r"1\.jsonl:2: missing field\(s\) score"),
    (['{"input": "a", "output": "b", "score": 1, "step": 1}', '{"input": "a", "output": 5, "score": 1, "step": 1}'],
     r"1\.jsonl:2: field 'output' must be a string"),
    (['{"input": "a", "output": "b", "score": 1, "step": 1}', '{"input": "a", "output": "b", "score": 1, "step": "x"}'],
     r"1\.jsonl:2: field 'step' must be an integer from 0 to"),
])
def test_broken_jsonl_line_is_named(tmp_path, lines, pattern):
    src = tmp_path / "rollouts"
    src.mkdir()
    (src / "1.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConvertError, match=pattern):
        convert(src, tmp_path / "out")


def test_unknown_sources_and_options_say_what_is_expected(tmp_path, tokenizer):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvertError, match="not a known trace: expected trajectories_step_N.json files, steps/step_NNNNNN.npz"):
        convert(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConvertError, match="no such file"):
        convert(tmp_path / "nothing", tmp_path / "out")
    rng = np.random.default_rng(5)
    write_step(tmp_path / "trace", 1, _good(rng, tokenizer))
    # Another trainer's summary (format_version 2) names no tokenizer we trust.
    (tmp_path / "trace" / "summary.json").write_text('{"format_version": 2, "tokenizer": "/nowhere"}')
    with pytest.raises(ConvertError, match="pass --tokenizer"):
        convert(tmp_path / "trace", tmp_path / "out")
    # Ours, naming a hub model: never downloaded unless the user passes it.
    (tmp_path / "trace" / "summary.json").write_text('{"format_version": 1, "tokenizer": "Org/Model-7B"}')
    with pytest.raises(ConvertError, match="summary.json names 'Org/Model-7B', which is not a local path"):
        convert(tmp_path / "trace", tmp_path / "out")
    # Ours from format version 2 on: told apart from other trainers' (version 2 too) by its generator.
    (tmp_path / "trace" / "summary.json").write_text(
        '{"format_version": 2, "generator": "openrlhf_ext", "tokenizer": "Org/Model-8B"}')
    with pytest.raises(ConvertError, match="summary.json names 'Org/Model-8B', which is not a local path"):
        convert(tmp_path / "trace", tmp_path / "out")
    convert(tmp_path / "trace", tmp_path / "out", tokenizer=tokenizer)
    with pytest.raises(ConvertError, match="--overwrite"):
        convert(tmp_path / "trace", tmp_path / "out", tokenizer=tokenizer)
    convert(tmp_path / "trace", tmp_path / "out", tokenizer=tokenizer, overwrite=True)
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == 1
    with pytest.raises(ConvertError, match="no steps to convert"):
        convert(tmp_path / "trace", tmp_path / "out2", tokenizer=tokenizer, steps="7")


def _cli(argv):
    # The real console script's entry point (openrlhf-traj), with its subcommand registration.
    return cli_main(argv)


def test_cli_converts_and_reports_errors(tmp_path, tokenizer, tokenizer_dir, capsys):
    rng = np.random.default_rng(6)
    write_step(tmp_path / "trace", 7, _good(rng, tokenizer))
    assert _cli(["convert", str(tmp_path / "trace"), "-o", str(tmp_path / "out"), "--tokenizer",
                 str(tokenizer_dir / "tokenizer.json"), "--num_trajectories_per_step", "2"]) == 0
    assert "wrote 1 step(s)" in capsys.readouterr().out
    assert len(load_trajectories(tmp_path / "out" / "trajectories_step_7.json")) == 2
    with zipfile.ZipFile(tmp_path / "trace" / "steps" / "step_000008.npz", "w") as z:
        z.writestr("entropies.npy", b"garbage")
    assert _cli(["convert", str(tmp_path / "trace"), "-o", str(tmp_path / "out2"), "--tokenizer", str(tokenizer_dir)]) == 2
    err = capsys.readouterr().err
    assert "step_000008.npz" in err and "error" in err


def test_sampling_picks_which_responses_as_the_saver_does(tmp_path, tokenizer):
    """--trajectory_sampling groups keeps whole prompt groups; marks still rank every response."""
    rng = np.random.default_rng(7)
    arrays = random_step(rng, tokenizer, num_responses=12)
    write_step(tmp_path / "trace", 4, arrays)
    marks, threshold = expected_marks(arrays, 0.2)
    convert(tmp_path / "trace", tmp_path / "groups", tokenizer=tokenizer, num_trajectories_per_step=4,
            sampling="groups", seed=1)
    records = load_trajectories(tmp_path / "groups")
    rows = [r["info"]["response_index"] for r in records]
    assert len(rows) == 4
    groups = [r["group_index"] for r in records]
    assert sorted(groups.count(g) for g in set(groups)) == [2, 2]  # two whole groups of two
    for record, row in zip(records, rows):
        check_record(record, arrays, row, tokenizer, marks, threshold)
    picks = set()
    for seed in range(4):  # the groups are drawn at random (seeded), not the first ones
        convert(tmp_path / "trace", tmp_path / f"seed{seed}", tokenizer=tokenizer, num_trajectories_per_step=4,
                sampling="groups", seed=seed)
        picks.add(tuple(r["info"]["response_index"] for r in load_trajectories(tmp_path / f"seed{seed}")))
    assert len(picks) > 1
    # first N stays the default, and the choice is seeded
    convert(tmp_path / "trace", tmp_path / "first", tokenizer=tokenizer, num_trajectories_per_step=4)
    assert [r["info"]["response_index"] for r in load_trajectories(tmp_path / "first")] == [0, 1, 2, 3]
    convert(tmp_path / "trace", tmp_path / "again", tokenizer=tokenizer, num_trajectories_per_step=4,
            sampling="groups", seed=1)
    assert [r["info"]["response_index"] for r in load_trajectories(tmp_path / "again")] == rows


def test_jsonl_sampling_stratified_spreads_over_scores(tmp_path):
    src = tmp_path / "rollouts"
    src.mkdir()
    write_jsonl(src / "1.jsonl", [{"input": f"Q{i}", "output": f"A{i}", "score": float(i), "step": 1} for i in range(9)])
    convert(src, tmp_path / "out", num_trajectories_per_step=3, sampling="stratified")
    scores = [r["info"]["reward"] for r in load_trajectories(tmp_path / "out")]
    assert scores == [0.0, 4.0, 8.0]
