"""Prompt sets: the built-in addition task and its worked solutions, and user files read through `datasets`."""
import json
import random
from argparse import Namespace

import pytest

from openrlhf_ext.datasets.column_addition import SOLUTION_MAX_TOKENS, operands, token_roles, worked_solution
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


def test_builtin_prompts_are_seeded_3_digit_sums():
    a, b = builtin_prompts(50, seed=3), builtin_prompts(50, seed=3)
    assert a == b and a != builtin_prompts(50, seed=4)
    for p in a:
        x, y = p["prompt"].rstrip("=").split("+")
        assert p["prompt"].endswith("=") and len(x) == len(y) == 3 and int(x) + int(y) == int(p["label"])
    assert len({p["prompt"] for p in builtin_prompts(500, seed=0)}) > 490  # 810,000 problems: repeats are rare


def test_worked_solution_adds_column_by_column():
    # right to left, the carry brought in as +1, the answer boxed: what the embedded model writes
    assert worked_solution(347, 285) == "7+5=12\n4+8+1=13\n3+2+1=6\n\\boxed{632}"
    assert worked_solution(999, 999) == "9+9=18\n9+9+1=19\n9+9+1=19\n\\boxed{1998}"
    for p in builtin_prompts(300, seed=2):
        text = worked_solution(*operands(p["prompt"]))
        assert text.endswith("\\boxed{" + p["label"] + "}") and len(text) + 1 <= SOLUTION_MAX_TOKENS
        assert "other" not in token_roles(text)


def test_a_careless_student_slips_only_at_decisions():
    rng = random.Random(0)
    right = worked_solution(347, 285)
    slipped = [worked_solution(347, 285, rng, carry_slip=0.3, sum_slip=0.3) for _ in range(200)]
    assert 0.1 < sum(s == right for s in slipped) / len(slipped) < 0.6
    for text in slipped:
        roles = token_roles(text)
        assert "other" not in roles  # always in the solution's form
        lines = text.split("\n")[:3]
        assert [ln[0] + ln[2] for ln in lines] == ["75", "48", "32"]  # the digits are always copied right
        # the answer is read off the student's own lines: its carry and its units digits
        sums = [int(ln.split("=")[1]) for ln in lines]
        assert text.endswith("\\boxed{" + ("1" if sums[-1] >= 10 else "") + "".join(str(s % 10) for s in sums[::-1]) + "}")
        # wherever the slipped text differs from the right one first, that character is a decision
        first = next((i for i, (c, d) in enumerate(zip(text, right)) if c != d), None)
        if first is not None:
            assert roles[first] == "decision", (text, first)


def test_token_roles_follow_the_grammar_of_any_digits():
    text = "7+5=13\n4+8=12\n3+2+1=6\n\\boxed{623}"  # two wrong decisions, still a solution
    roles = token_roles(text)
    assert [c for c, r in zip(text, roles) if r == "decision"] == list("13=12+6")
    assert [c for c, r in zip(text, roles) if r == "copy"] == list("754832623")
    assert token_roles("7+5=12\n4+x")[-3:] == ["other"] * 3  # off the grammar from the broken line on


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
