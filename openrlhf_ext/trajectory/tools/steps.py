"""The tools' ``--steps`` selection: "1,5,10-20", kept as ranges (``1-99999999999`` costs two
numbers, not a set of 10^11)."""
from __future__ import annotations

import re
from typing import Iterable, Iterator


class StepSelection:
    """The steps of a ``--steps`` string: ``step in selection``, and iteration in order.

    Example:
        >>> selection = parse_steps("1,5,10-12")
        >>> 11 in selection, 13 in selection, list(selection)
        (True, False, [1, 5, 10, 11, 12])
        >>> 99_999_999_998 in parse_steps("1-99999999999")
        True
    """

    def __init__(self, ranges: list[tuple[int, int]]):
        self.ranges = sorted(ranges)

    def __contains__(self, step) -> bool:
        return isinstance(step, int) and any(first <= step <= last for first, last in self.ranges)

    def _disjoint(self) -> Iterator[tuple[int, int]]:
        seen_to = -1
        for first, last in self.ranges:  # overlapping ranges give each step once
            if last > seen_to:
                yield max(first, seen_to + 1), last
                seen_to = last

    def __iter__(self) -> Iterator[int]:
        for first, last in self._disjoint():
            yield from range(first, last + 1)

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in self._disjoint())

    def __eq__(self, other) -> bool:
        if isinstance(other, StepSelection):
            return list(self._disjoint()) == list(other._disjoint())
        return isinstance(other, (set, frozenset)) and len(self) == len(other) and all(s in self for s in other)

    def __repr__(self) -> str:
        return "StepSelection(" + ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.ranges) + ")"


def parse_steps(spec: str | Iterable[int] | None) -> StepSelection | set[int] | None:
    """Parse a step selection such as "1,5,10-20"; None or "" means all steps. A collection of
    step numbers (a caller's own selection) is taken as a set.

    Example:
        >>> sorted(parse_steps("1,5,10-12")), parse_steps({3, 4}), parse_steps("")
        ([1, 5, 10, 11, 12], {3, 4}, None)
    """
    if spec is not None and not isinstance(spec, str):
        return spec if isinstance(spec, StepSelection) else set(spec)
    if spec is None or not spec.strip():
        return None
    ranges = []
    for part in spec.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise ValueError(f"bad step selection {part!r} in {spec!r}: expected e.g. 1,5,10-20")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"bad step range {part!r} in {spec!r}: the end is before the start")
        ranges.append((first, last))
    return StepSelection(ranges)
