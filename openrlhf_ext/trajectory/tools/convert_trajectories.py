"""Convert step files that the viewer opens (other savers', other tools', hand-edited) into files
that follow FORMAT.md exactly: ``openrlhf-traj convert SRC -o OUT`` with SRC a step file or a
folder of them.

They are read as the viewer reads them (``format.read_lenient``), with its notices, and written
in FORMAT.md's shape: a list where a number was expected becomes its mean, texts missing from a
record are the join of its token texts, prompt tokens are marked. The marks, entropies and
thresholds are the file's own. A file the viewer refuses is named and left out; ``strict``
refuses instead any file that breaks FORMAT.md (what ``validate`` reports).

Example (a record of another saver: no generated_text, per-token advantages):
    >>> import json, tempfile, pathlib
    >>> from openrlhf_ext.trajectory.tools.convert import convert
    >>> from openrlhf_ext.trajectory import load_trajectories
    >>> src = pathlib.Path(tempfile.mkdtemp())
    >>> tokens = [{"text": " 4", "high_entropy": True, "entropy_score": 1.5}]
    >>> _ = (src / "trajectories_step_2.json").write_text(json.dumps([
    ...     {"global_step": 2, "pure_generated_tokens": tokens, "advantages": [0.5, 1.5]}]))
    >>> result = convert(src, src / "fixed")
    >>> [str(n) for n in result["notices"]]                            # what the viewer says, too
    ['.../trajectories_step_2.json: record 0: advantages: a list where a number was expected (its mean is used)']
    >>> record, = load_trajectories(src / "fixed")                   # strict: FORMAT.md exactly
    >>> record["advantages"], record["pure_generated_text"]
    (1.0, ' 4')
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..format import Problem, read_lenient_files, read_step_files, resolve_step_files
from ..manifest_entry import record_fork_words, record_mismatch
from ..sampling import choose_responses
from .errors import ConvertError


def trajectory_files(src: Path) -> list[Path]:
    """The step files of ``src`` (a step file, a folder of them, or a run's save_path), or []."""
    try:
        return resolve_step_files(src)
    except FileNotFoundError:
        return []


def _strict_check(path: Path) -> None:
    problems = read_step_files([path])[1]  # what `validate` reports of the file
    if problems:
        shown = "; ".join(str(p) for p in problems[:5])
        raise ConvertError(f"{path}: breaks FORMAT.md ({len(problems)} problem(s): {shown}); --strict refuses it "
                           "(without --strict it is converted as the viewer reads it)")


def trajectory_steps(files, notices: list[Problem], errors: list[Problem], strict: bool = False,
                     wanted=None) -> Iterator[tuple[int, str, list[dict]]]:
    """(global_step, file name, FORMAT.md records) of each step the files hold, one file at a
    time. What the viewer would note goes into ``notices``; files it would refuse into ``errors``."""
    seen: dict[int, Path] = {}
    for path, read, problem in read_lenient_files(files):
        if strict:
            _strict_check(path)
        if read is None:
            errors.append(problem)
            continue
        notices.extend(read.notices)
        by_step: dict[int, list[dict]] = {}
        if not read.data and read.step is not None:
            by_step[read.step] = []  # `[]`: a step with no trajectories, as the saver writes it
        for record in read.records:
            by_step.setdefault(record["global_step"], []).append(record)
        for step, records in by_step.items():
            if step in seen:  # two runs' files, or one step saved twice: the first one is kept
                errors.append(Problem(str(path), None, None, f"step {step} was already converted from {seen[step]}; "
                                      f"its {len(records)} record(s) here are left out (convert one run at a time)"))
                continue
            seen[step] = path
            if wanted is None or step in wanted:
                yield step, path.name, records


def trajectory_step_records(records: list[dict], limit: int | None, sampling: str, seed: int):
    """(records to write, step_info for manifest_entry, the step's ratio) of one step's records;
    ``limit`` of them picked as the saver picks responses."""
    rewards = [r["info"]["reward"] for r in records]
    if limit is not None:
        groups = [r.get("group_index", r["prompt_text"]) for r in records]
        forks = [sum(t["high_entropy"] for t in r["pure_generated_tokens"]) for r in records]
        kept = choose_responses(groups, [float("nan") if x is None else x for x in rewards], limit, sampling,
                                seed=seed + records[0]["global_step"], forks=forks) if records else []
        chosen = [records[i] for i in kept]
    else:
        chosen = records
    step_info = {
        "num_responses": len(records),
        "entropies": [t["entropy_score"] for r in records for t in r["pure_generated_tokens"]
                      if t["entropy_score"] is not None],
        "num_response_tokens": sum(len(r["pure_generated_tokens"]) for r in records),
        "rewards": rewards,
        "threshold": next((r["high_entropy_threshold"] for r in records if "high_entropy_threshold" in r), None),
        # over the file's records: a step file holds the responses its saver kept, not the whole step
        "fork_words": record_fork_words(records),
        "logprob_mismatch": record_mismatch(records),
    }
    ratio = next((r["high_entropy_token_ratio"] for r in records if "high_entropy_token_ratio" in r), None)
    return chosen, step_info, ratio
