"""The built-in task: add two 3-digit numbers in writing, column by column, then box the answer.

A prompt is ``"347+285="``; a worked solution adds the digits right to left, one line per column,
bringing the carry in as ``+1``, and ends with the answer as math-verify reads it::

    7+5=12
    4+8+1=13
    3+2+1=6
    \\boxed{632}

Every solution has this form (34-37 characters, one token each for the embedded model), so where a
policy is unsure can be read off its structure (`token_roles`):
- decision: a column's sum digits (the digit being computed, its carry out) and, from the second
  column on, the character after the two digits, ``+`` (a carry comes in) or ``=`` (none);
- copy: the column's two digits, read from the prompt, and the answer's digits, read off the lines;
- format: ``+``, ``=``, the carry's ``1``, newlines, ``\\boxed{``, ``}`` (and the end token).

Example:
    >>> worked_solution(347, 285)
    '7+5=12\\n4+8+1=13\\n3+2+1=6\\n\\\\boxed{632}'
    >>> token_roles(worked_solution(347, 285))[:7]
    ['copy', 'format', 'copy', 'format', 'decision', 'decision', 'format']
"""
from __future__ import annotations

import random
import re

OPERAND_DIGITS = 3  # operands 100-999: every prompt has the same 8 characters
# The longest solution is 39 characters + the end token (three "9+9+1=19" lines, a 4-digit answer);
# this budget leaves room for a malformed one to show itself without running on.
SOLUTION_MAX_TOKENS = 48
_LINE = re.compile(r"(\d)\+(\d)(\+1)?=(\d{1,2})\n")
_ANSWER = re.compile(r"\\boxed\{(\d*)\}?")


def addition_problem(rng: random.Random) -> dict:
    """One problem: ``"a+b="`` with ``a, b`` of `OPERAND_DIGITS` digits; the label is the sum.

    Example:
        >>> addition_problem(random.Random(0))
        {'prompt': '964+494=', 'label': '1458'}
    """
    lo, hi = 10 ** (OPERAND_DIGITS - 1), 10**OPERAND_DIGITS - 1
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    return {"prompt": f"{a}+{b}=", "label": str(a + b)}


def operands(prompt: str) -> tuple[int, int]:
    """``(a, b)`` of a prompt ``"a+b="``.

    Example:
        >>> operands("347+285=")
        (347, 285)
    """
    a, b = prompt.rstrip("=").split("+")
    return int(a), int(b)


def worked_solution(a: int, b: int, rng: random.Random | None = None, carry_slip: float = 0.0,
                    sum_slip: float = 0.0) -> str:
    """The written column addition of ``a + b``; with ``rng``, a careless student's.

    The careless student knows the method but slips: from the second column on it gets the carry
    wrong with probability ``carry_slip`` (forgets it, or brings in one that is not there), and it
    writes a column sum off by 1 or 2 with probability ``sum_slip``. The rest of its solution
    follows what it wrote: the next carry comes from the sum on the page and the answer is read off
    the lines, as a person's would be. So only the decisions are ever wrong.

    Example:
        >>> worked_solution(905, 106)
        '5+6=11\\n0+0+1=1\\n9+1=10\\n\\\\boxed{1011}'
    """
    da, db = str(a)[::-1], str(b)[::-1]
    lines, digits, carry = [], [], 0
    for i, (x, y) in enumerate(zip(da, db)):
        if rng is not None and i > 0 and rng.random() < carry_slip:
            carry = 1 - carry
        s = int(x) + int(y) + carry
        if rng is not None and rng.random() < sum_slip:
            s = max(0, s + rng.choice((-2, -1, 1, 2)))
            s += s == int(x) + int(y) + carry  # max(0, .) may have undone the slip
        lines.append(f"{x}+{y}" + ("+1" if carry else "") + f"={s}\n")
        digits.append(str(s % 10))
        carry = s // 10
    answer = ("1" if carry else "") + "".join(reversed(digits))
    return "".join(lines) + "\\boxed{" + answer + "}"


def token_roles(response: str) -> list[str]:
    """``"decision"``, ``"copy"``, ``"format"`` or ``"other"`` for each character of ``response``.

    Reads the response by the solution's grammar, whatever its digits (a wrong sum is still a
    sum); characters off the grammar (a malformed line and everything after it, a character after
    the answer's ``}``) are ``"other"``.

    Example:
        >>> roles = token_roles("5+6=11\\n0+0+1=1\\n")
        >>> [c for c, r in zip("5+6=11\\n0+0+1=1\\n", roles) if r == "decision"]
        ['1', '1', '+', '1']
    """
    roles = ["other"] * len(response)
    pos, column = 0, 0
    while m := _LINE.match(response, pos):
        s = m.start()
        roles[s : s + 3] = ["copy", "format", "copy"]
        carry_at = s + 3  # "+" when a carry comes in, "=" when none: a decision from the 2nd column on
        roles[carry_at] = "decision" if column else "format"
        if m.group(3):
            roles[carry_at + 1 : carry_at + 3] = ["format", "format"]  # the carry's "1", then "="
        roles[m.start(4) : m.end(4)] = ["decision"] * len(m.group(4))
        roles[m.end(4)] = "format"  # newline
        pos, column = m.end(), column + 1
    if m := _ANSWER.match(response, pos):
        roles[m.start() : m.end()] = ["format"] * (m.end() - m.start())
        roles[m.start(1) : m.end(1)] = ["copy"] * len(m.group(1))
    return roles


def id_roles(response_ids: list[int], tokenizer) -> list[str]:
    """`token_roles` of a response given as token ids of the embedded (one character per token)
    tokenizer: the end token is ``"end"``; another special token breaks the grammar there.

    Example:
        >>> id_roles(tok.encode("5+6=11") + [tok.eos_token_id], tok)  # doctest: +SKIP
        ['copy', 'format', 'copy', 'format', 'decision', 'decision', 'end']
    """
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(response_ids))
    text = "".join("\x00" if t in special else p for t, p in zip(response_ids, pieces))
    roles = token_roles(text)
    return ["end" if t == tokenizer.eos_token_id else r for t, r in zip(response_ids, roles)]

