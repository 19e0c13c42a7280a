"""Prompt sets: the built-in arithmetic task, and user files read through `datasets`."""
import json
from argparse import Namespace

import pytest

from openrlhf_ext.datasets.prompts import builtin_prompts, load_prompts


def args(**kw):
    base = dict(prompt_data=None, input_key="input", label_key=None, apply_chat_template=False, max_samples=None, seed=42)
    base.update(kw)
    return Namespace(**base)


class ChatTok:
    """A stand-in with a real jinja chat template would need a model; this renders like ChatML."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


def test_builtin_prompts_are_seeded_sums():
    a, b = builtin_prompts(50, seed=3), builtin_prompts(50, seed=3)
    assert a == b and a != builtin_prompts(50, seed=4)
    for p in a:
        x, y = p["prompt"].rstrip("=").split("+")
        assert p["prompt"].endswith("=") and int(x) + int(y) == int(p["label"])
    assert len({p["prompt"] for p in builtin_prompts(500, seed=0)}) > 400  # varied, not one problem


def test_builtin_set_when_no_prompt_data():
    rows = load_prompts(args(max_samples=8, seed=7))
    assert rows == builtin_prompts(8, seed=7)


@pytest.fixture
def rows():
    return [{"question": f"What is {i} + {i}?", "answer": str(2 * i), "extra": i} for i in range(5)]


def test_jsonl_file(tmp_path, rows):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = load_prompts(args(prompt_data=str(path), input_key="question", label_key="answer", max_samples=3))
    assert out == [{"prompt": f"What is {i} + {i}?", "label": str(2 * i)} for i in range(3)]


def test_json_parquet_and_saved_dataset_give_the_same_prompts(tmp_path, rows):
    import datasets

    ds = datasets.Dataset.from_list(rows)
    (tmp_path / "p.json").write_text(json.dumps(rows))
    ds.to_parquet(str(tmp_path / "p.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "saved_dict"))
    expected = [{"prompt": r["question"], "label": r["answer"]} for r in rows]
    for src in ("p.json", "p.parquet", "saved", "saved_dict"):
        got = load_prompts(args(prompt_data=str(tmp_path / src), input_key="question", label_key="answer"))
        assert got == expected, src
    test_split = load_prompts(args(prompt_data=str(tmp_path / "saved_dict"), input_key="question", prompt_split="test"))
    assert test_split == [{"prompt": rows[0]["question"], "label": ""}]


def test_chat_template_for_strings_and_message_lists(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(
        json.dumps({"input": "1+1=", "label": 2}) + "\n"
        + json.dumps({"input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2="}], "label": 4}) + "\n"
    )
    out = load_prompts(args(prompt_data=str(path), label_key="label", apply_chat_template=True), ChatTok())
    assert out == [
        {"prompt": "<|user|>1+1=\n<|assistant|>", "label": "2"},
        {"prompt": "<|system|>Be brief.\n<|user|>2+2=\n<|assistant|>", "label": "4"},
    ]
    # without --apply_chat_template a list of messages is refused with what to do
    with pytest.raises(ValueError, match="--apply_chat_template"):
        load_prompts(args(prompt_data=str(path), label_key="label"))


def test_input_template(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"input": "3+4="}) + "\n")
    out = load_prompts(args(prompt_data=str(path), input_template="Q: {}\nA: "))
    assert out == [{"prompt": "Q: 3+4=\nA: ", "label": ""}]


def test_errors_name_the_flag_to_change(tmp_path, rows):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="--input_key"):
        load_prompts(args(prompt_data=str(path)))  # no "input" column
    with pytest.raises(ValueError, match="--label_key"):
        load_prompts(args(prompt_data=str(path), input_key="question", label_key="solution"))
    bad = tmp_path / "p.txt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="unknown file type"):
        load_prompts(args(prompt_data=str(bad)))
