"""The default reward: 1.0 when the response's final answer equals the label, checked by `math-verify`.

`math-verify` (Hugging Face) extracts the answer from the response (``\\boxed{}``, LaTeX, or the
last plain expression) and compares it with the label symbolically, so ``0.5`` matches
``\\frac{1}{2}``. For the embedded arithmetic task it is the exact-answer reward: a worked
solution ending in ``\\boxed{632}`` against label ``"632"`` scores 1, ``\\boxed{633}`` scores 0.

A step scores hundreds of responses and a full math-verify parse costs milliseconds (regexes, then
a LaTeX parse into sympy), so the batch call does less of it, always with math-verify's verdict:
- each distinct label is parsed once, and each distinct (response, label) pair is judged once
  (a GRPO group often holds the same response several times);
- a response whose final answer is a plain ``\\boxed{<digits>}`` after plain arithmetic text,
  against a label that is a plain integer, is compared as integers (`plain_number_verdict`): on
  that domain math-verify's extraction can only find the boxed number and its comparison is integer
  equality (tests/test_rewards.py checks it against math-verify itself with hypothesis);
- the rest go to math-verify, spread over a process pool when there are many of them (where its
  ``signal.alarm`` timeouts work, as every pool process runs them in its main thread).

Example:
    >>> reward = MathVerifyReward()
    >>> reward(["12+7=\\\\boxed{19}</s>", "12+7=\\\\boxed{18}</s>"], ["12+7=", "12+7="], ["19", "19"])
    [1.0, 0.0]
"""
from __future__ import annotations

import functools
import os
import re
import threading

# The domain of the plain-number shortcut. The text before the box may hold only digits, + = space
# and newline: no letters (so none of math-verify's "final answer" patterns), no $ \( \[ (so no LaTeX
# environment), no brace (so its greedy \boxed{.+} match ends at this box's brace). ASCII digits
# only: str.isdigit and \d accept other scripts' digits, which math-verify reads differently.
_BOXED_INTEGER = re.compile(r"[0-9+= \n]*\\boxed\{([0-9]+)\}[ \n]*")
_PLAIN_INTEGER = re.compile(r"[ \n]*([0-9]+)[ \n]*")
# Fewer slow items than this are judged in this process: a pool's round trip would cost more.
POOL_MIN_ITEMS = 32


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


def plain_number_verdict(response: str, label: str) -> float | None:
    """math-verify's verdict without parsing, where both sides are plain integers; else None.

    Applies when the label is an integer (digits, maybe padded with spaces or newlines) and the
    response is digits, ``+ = `` and newlines ending in ``\\boxed{<digits>}``: math-verify then
    extracts exactly that boxed number and compares integers exactly (leading zeros read as the
    number, as it does).

    Example:
        >>> plain_number_verdict("7+5=12\\n4+8+1=13\\n3+2+1=6\\n\\\\boxed{632}", "632")
        1.0
        >>> plain_number_verdict("\\\\boxed{0632}", "632"), plain_number_verdict("so \\\\boxed{632}", "632")
        (1.0, None)
    """
    gold = _PLAIN_INTEGER.fullmatch(label)
    if gold is None:
        return None
    answer = _BOXED_INTEGER.fullmatch(response)
    if answer is None:
        return None
    return float(int(answer.group(1)) == int(gold.group(1)))


def _timeout() -> int | None:
    # math-verify bounds its parse time with signal.alarm, which only works in a main thread
    return 5 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def _parse_label(label: str):
    """math-verify's parse of a label, once per distinct label (labels repeat across a step's samples)."""
    from math_verify import parse

    return parse(label, parsing_timeout=_timeout())


def math_verify_score(response: str, label: str) -> float:
    """1.0 when math-verify finds the response's final answer equal to ``label``, else 0.0.

    An empty label (no ``--label_key``) scores 0; a label math-verify cannot read is compared as
    exact text.

    Example:
        >>> math_verify_score("x=3+4 so \\\\boxed{7}", "7")
        1.0
    """
    quick = _quick_verdict(response, label)
    return _math_verify_verdict(response, label) if quick is None else quick


def _quick_verdict(response: str, label: str) -> float | None:
    """The verdict without math-verify where there is one: 0 for an empty label, else
    `plain_number_verdict`; None when math-verify must judge."""
    if not label.strip():  # no label: nothing to check the answer against
        return 0.0
    return plain_number_verdict(response, label)


def _math_verify_verdict(response: str, label: str) -> float:
    """math-verify's own verdict (a pair `_quick_verdict` has no verdict for)."""
    from math_verify import parse, verify

    gold = _parse_label(label)
    if not gold:  # a label math-verify cannot read: fall back to exact text
        return float(response.strip() == label.strip())
    timeout = _timeout()
    answer = parse(response, parsing_timeout=timeout)
    if not answer:
        return 0.0
    return float(verify(gold, answer, timeout_seconds=timeout))


def _score_pairs(pairs: list[tuple[str, str]]) -> list[float]:
    return [_math_verify_verdict(r, lab) for r, lab in pairs]  # pairs without a quick verdict


class MathVerifyReward:
    """``reward_fn(queries, prompts, labels) -> list[float]``: 1.0 right, 0.0 wrong or no answer.

    Args:
        special_tokens: strings removed from each response before parsing (e.g. a tokenizer's
            ``all_special_tokens``: ``</s>`` or ``<|im_end|>`` left in a query can glue onto an answer).
        num_workers: processes of the pool that judges the responses the plain-number shortcut
            does not cover (default: the CPU count, at most 8; 0 or 1 judges them in this process).
            The pool starts on the first batch with at least ``POOL_MIN_ITEMS`` such responses and
            is not pickled: a copy sent to a Ray worker starts its own.

    Example:
        >>> MathVerifyReward()(["x=3+4 so \\\\boxed{7}"], ["x="], ["7"])
        [1.0]
    """

    def __init__(self, special_tokens=(), num_workers: int | None = None):
        self.special_tokens = [t for t in special_tokens if t]
        self.num_workers = min(os.cpu_count() or 1, 8) if num_workers is None else int(num_workers)
        self._pool = None

    def __getstate__(self):
        return {**self.__dict__, "_pool": None}

    def score(self, response: str, label: str) -> float:
        """One response against one label (math-verify's verdict)."""
        return math_verify_score(response, label)

    def __call__(self, queries: list[str], prompts: list[str], labels: list[str]) -> list[float]:
        if not (len(queries) == len(prompts) == len(labels)):
            raise ValueError(f"queries, prompts and labels differ in length: {len(queries)}, {len(prompts)}, {len(labels)}")
        pairs = [(response_text(q, p, self.special_tokens), "" if label is None else str(label))
                 for q, p, label in zip(queries, prompts, labels)]
        verdicts: dict[tuple[str, str], float] = {}
        slow = []
        for pair in dict.fromkeys(pairs):  # distinct pairs, in order
            fast = _quick_verdict(*pair)
            if fast is None:
                slow.append(pair)
            else:
                verdicts[pair] = fast
        verdicts.update(zip(slow, self._judge(slow)))
        return [verdicts[p] for p in pairs]

    def _judge(self, pairs: list[tuple[str, str]]) -> list[float]:
        if len(pairs) < POOL_MIN_ITEMS or self.num_workers <= 1:
            return _score_pairs(pairs)
        pool = self._start_pool()
        size = -(-len(pairs) // (4 * self.num_workers))  # a few chunks per process: balance without many trips
        chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        return [s for part in pool.map(_score_pairs, chunks) for s in part]

    def _start_pool(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the caller may hold threads (Ray's, a server's) that a fork would copy mid-work
            self._pool = ProcessPoolExecutor(self.num_workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        """Stop the pool (if one started); the reward stays usable and starts a new one when needed."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
