"""The tools' ``--steps`` selection: "1,5,10-20"."""
from __future__ import annotations

import re
from typing import Iterable


def parse_steps(spec: str | Iterable[int] | None) -> set[int] | None:
    """Parse a step selection such as "1,5,10-20" into a set of steps; None or "" means all steps.
    A collection of step numbers (a caller's own selection) is taken as it is.

    Example:
        >>> sorted(parse_steps("1,5,10-12")), parse_steps({3, 4}), parse_steps("")
        ([1, 5, 10, 11, 12], {3, 4}, None)
    """
    if spec is not None and not isinstance(spec, str):
        return set(spec)
    if spec is None or not spec.strip():
        return None
    steps: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise ValueError(f"bad step selection {part!r} in {spec!r}: expected e.g. 1,5,10-20")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"bad step range {part!r} in {spec!r}: the end is before the start")
        steps.update(range(first, last + 1))
    return steps
