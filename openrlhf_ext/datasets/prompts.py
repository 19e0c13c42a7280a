"""Prompt sets for RL: the built-in arithmetic task, or a user's file through `datasets`.

Every loader returns the same plain shape, a list of ``{"prompt": str, "label": str}``: the prompt
is the exact text the policy continues (chat template already applied when asked for), the label
is what the reward function compares the response with.

Example:
    >>> from openrlhf_ext.datasets.prompts import builtin_prompts
    >>> builtin_prompts(2, seed=0)
    [{'prompt': '964+494=', 'label': '1458'}, {'prompt': '876+530=', 'label': '1406'}]
"""
from __future__ import annotations

import os
import random

# The built-in task (column addition with a worked solution) lives in column_addition.py; the
# embedded model (openrlhf_ext/models/embedded.py) was warmed up on exactly its prompts and
# solutions, so changing either makes the shipped model a stranger to its own task: rebuild it.
from openrlhf_ext.datasets.column_addition import addition_problem


def builtin_prompts(num: int, seed: int = 42) -> list[dict]:
    """``num`` addition prompts drawn with their own ``random.Random(seed)`` (global RNGs untouched).

    Example:
        >>> [p["prompt"] for p in builtin_prompts(3, seed=1)]
        ['237+682=', '967+921=', '882+164=']
    """
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    rng = random.Random(seed)
    return [addition_problem(rng) for _ in range(num)]


BUILTIN_PROMPT_COUNT = 4096  # size of the built-in set when --max_samples does not say


def _read_dataset(path: str, split: str):
    """A `datasets.Dataset` from a jsonl/json/parquet/csv file, a data folder, a saved dataset or a hub name."""
    import datasets

    if os.path.isfile(path):
        ext = path.rsplit(".", 1)[-1].lower()
        builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(ext)
        if builder is None:
            raise ValueError(f"--prompt_data {path}: unknown file type .{ext}; use .jsonl, .json, .parquet or .csv")
        data = datasets.load_dataset(builder, data_files=path, split="train")
    elif os.path.isdir(path) and (
        os.path.isfile(os.path.join(path, "dataset_info.json")) or os.path.isfile(os.path.join(path, "dataset_dict.json"))
    ):
        data = datasets.load_from_disk(path)  # written by Dataset.save_to_disk
    else:  # a folder of data files, or a hub name (needs network)
        data = datasets.load_dataset(path)
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ValueError(f"--prompt_data {path} has splits {list(data)}, not {split!r}; pick one with --prompt_split")
        data = data[split]
    return data


def _as_prompt(value, tokenizer, apply_chat_template: bool, input_template: str | None) -> str:
    if apply_chat_template:
        messages = [{"role": "user", "content": value}] if isinstance(value, str) else value
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(value, str):
        raise ValueError(f"prompt is a {type(value).__name__} (chat messages?): pass --apply_chat_template to render it")
    return input_template.format(value) if input_template else value


def load_prompts(args, tokenizer=None) -> list[dict]:
    """The RL prompt set the flags ask for, as ``[{"prompt": str, "label": str}, ...]``.

    Flags read from ``args`` (OpenRLHF's names; absent ones take the defaults shown):
    ``prompt_data`` (None: the built-in addition set), ``input_key`` ("input"), ``label_key``
    (None: labels are ""), ``apply_chat_template`` (False), ``input_template`` (None, e.g.
    ``"Q: {}\\nA: "``), ``max_samples`` (all), ``prompt_split`` ("train"), ``seed`` (42).
    With ``apply_chat_template`` a string input becomes one user message; a list of messages is
    rendered as it is. ``tokenizer`` is only needed for ``apply_chat_template``.

    Example:
        >>> from argparse import Namespace
        >>> load_prompts(Namespace(prompt_data=None, max_samples=2, seed=0))
        [{'prompt': '964+494=', 'label': '1458'}, {'prompt': '876+530=', 'label': '1406'}]
        >>> # a jsonl file with {"question": "...", "answer": "..."} rows:
        >>> load_prompts(Namespace(prompt_data="gsm8k.jsonl", input_key="question", label_key="answer"))  # doctest: +SKIP
    """
    path = getattr(args, "prompt_data", None)
    input_key = getattr(args, "input_key", None) or "input"
    label_key = getattr(args, "label_key", None)
    chat = bool(getattr(args, "apply_chat_template", False))
    template = getattr(args, "input_template", None)
    max_samples = getattr(args, "max_samples", None)
    if chat and tokenizer is None:
        raise ValueError("--apply_chat_template needs the tokenizer: call load_prompts(args, tokenizer)")

    if not path:
        n = BUILTIN_PROMPT_COUNT if max_samples is None else min(int(max_samples), 10 * BUILTIN_PROMPT_COUNT)
        rows = builtin_prompts(n, seed=getattr(args, "seed", 42))
        return [{"prompt": _as_prompt(r["prompt"], tokenizer, chat, template), "label": r["label"]} for r in rows]

    data = _read_dataset(path, getattr(args, "prompt_split", None) or "train")
    if input_key not in data.column_names:
        raise ValueError(f"--prompt_data {path} has no column {input_key!r} (columns: {data.column_names}); set --input_key")
    if label_key and label_key not in data.column_names:
        raise ValueError(f"--prompt_data {path} has no column {label_key!r} (columns: {data.column_names}); set --label_key")
    if max_samples is not None:
        data = data.select(range(min(int(max_samples), len(data))))
    out = []
    for row in data:
        label = row[label_key] if label_key else ""
        out.append({
            "prompt": _as_prompt(row[input_key], tokenizer, chat, template),
            "label": "" if label is None else str(label),
        })
    return out
