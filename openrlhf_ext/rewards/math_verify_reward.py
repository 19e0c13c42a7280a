"""The default reward: 1.0 when the response's final answer equals the label, checked by `math-verify`.

`math-verify` (Hugging Face) extracts the answer from the response (``\\boxed{}``, LaTeX, or the
last plain expression) and compares it with the label symbolically, so ``0.5`` matches
``\\frac{1}{2}``. For the embedded arithmetic task it is the exact-answer reward: ``"146"`` against
label ``"146"`` scores 1, ``"1466"`` or ``"146+1"`` score 0.

Example:
    >>> reward = MathVerifyReward()
    >>> reward(["12+7=19</s>", "12+7=18</s>"], ["12+7=", "12+7="], ["19", "19"])
    [1.0, 0.0]
"""
from __future__ import annotations

import threading


def response_text(query: str, prompt: str, special_tokens=()) -> str:
    """The response part of an OpenRLHF query (prompt + response, decoded with special tokens).

    Example:
        >>> response_text("<s>12+7=19</s>", "12+7=", special_tokens=["<s>", "</s>"])
        '19'
    """
    at = query.find(prompt) if prompt else -1
    text = query[at + len(prompt) :] if at >= 0 else query
    for tok in special_tokens:
        if tok:
            text = text.replace(tok, "")
    return text


class MathVerifyReward:
    """``reward_fn(queries, prompts, labels) -> list[float]``: 1.0 right, 0.0 wrong or no answer.

    Args:
        special_tokens: strings removed from each response before parsing (e.g. a tokenizer's
            ``all_special_tokens``: ``</s>`` or ``<|im_end|>`` left in a query can glue onto an answer).

    math-verify bounds its parse time with ``signal.alarm``, which only works in a main thread; in
    any other thread (a Ray actor's, a web server's) it is run without that timeout.

    Example:
        >>> MathVerifyReward()(["x=3+4 so \\\\boxed{7}"], ["x="], ["7"])
        [1.0]
    """

    def __init__(self, special_tokens=()):
        self.special_tokens = [t for t in special_tokens if t]

    def score(self, response: str, label: str) -> float:
        from math_verify import parse, verify

        main = threading.current_thread() is threading.main_thread()
        timeout = 5 if main else None
        gold = parse(label, parsing_timeout=timeout)
        if not gold:  # a label math-verify cannot read: fall back to exact text
            return float(response.strip() == label.strip())
        answer = parse(response, parsing_timeout=timeout)
        if not answer:
            return 0.0
        return float(verify(gold, answer, timeout_seconds=timeout))

    def __call__(self, queries: list[str], prompts: list[str], labels: list[str]) -> list[float]:
        if not (len(queries) == len(prompts) == len(labels)):
            raise ValueError(f"queries, prompts and labels differ in length: {len(queries)}, {len(prompts)}, {len(labels)}")
        return [
            self.score(response_text(q, p, self.special_tokens), "" if label is None else str(label))
            for q, p, label in zip(queries, prompts, labels)
        ]
