"""Probe prompts (trainer/probes.py): which prompts are probes, that no probe is trained on, and
which steps are probe steps. The probe stage in the training job is tests/test_train_hf.py."""
from __future__ import annotations

import argparse
import json

import pytest

from openrlhf_ext.trainer.probes import is_probe_step, load_probe_prompts, split_probe_prompts

ROWS = [{"prompt": f"{i}+{i}=", "label": str(2 * i)} for i in range(10)]


def test_held_out_probes_are_seeded_and_every_copy_of_their_text_leaves_training():
    rows = ROWS + [dict(ROWS[3])]  # "3+3=" twice
    train, probes = split_probe_prompts(rows, 3, seed=1)
    assert split_probe_prompts(rows, 3, seed=1) == (train, probes)  # a resumed run holds out the same ones
    assert len(probes) == 3 and not {p["prompt"] for p in train} & {p["prompt"] for p in probes}
    assert len(train) + len(probes) + sum(p["prompt"] == "3+3=" for p in probes) == len(rows)
    assert split_probe_prompts(rows, 0, seed=1) == (rows, [])
    with pytest.raises(ValueError, match="would hold out all 11 prompts"):
        split_probe_prompts(rows, 11, seed=1)


def test_probes_from_a_file_are_read_like_the_prompt_data(tmp_path):
    path = tmp_path / "probes.jsonl"
    path.write_text("".join(json.dumps({"q": p, "a": a}) + "\n" for p, a in (("4+4", "8"), ("7+1", "8"), ("2+9", "11"))))
    args = argparse.Namespace(trajectory_probe_data=str(path), trajectory_probe_prompts=2, input_key="q", label_key="a",
                              input_template="{}=", apply_chat_template=False, prompt_split="train", seed=3)
    train, probes = load_probe_prompts(args, None, ROWS)
    assert probes == [{"prompt": "4+4=", "label": "8"}, {"prompt": "7+1=", "label": "8"}]  # the first 2, templated
    assert [p["prompt"] for p in ROWS if p not in train] == ["4+4="]  # the training copy of a probe is left out


def test_probe_steps_are_the_first_every_kth_and_the_last():
    assert [s for s in range(1, 8) if is_probe_step(s, 3, 7)] == [1, 3, 6, 7]
    assert [s for s in range(1, 5) if is_probe_step(s, 1, 4)] == [1, 2, 3, 4]
