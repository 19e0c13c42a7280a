"""The trajectory package's shape, as users rely on it: the public names, the command-line checks
that start without torch, and imports that run one way (core <- format <- tools), so that the
saver core can be used alone from any trainer."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_saver import make_saver, step_experiences

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "openrlhf_ext" / "trajectory"
TRAINER_SIDE = ("algo", "models", "rollout", "ray", "trainer", "cli", "datasets", "rewards")
# The command's entry points (`python -m openrlhf_ext.trajectory`, and the console script of an
# install made before the tools moved): they start the tools, they are not the core.
ENTRY_POINTS = {"__main__.py", "cli.py"}
PUBLIC = ["ExperienceLayoutError", "TrajectoryFormatError", "TrajectorySaver", "add_trajectory_args", "build_record", "high_entropy_mask",
          "load_trajectories", "token_entropy", "token_texts"]


def test_public_names_load_from_the_package():
    import openrlhf_ext.trajectory as trajectory

    assert sorted(dir(trajectory)) == sorted(PUBLIC)
    for name in PUBLIC:
        assert callable(getattr(trajectory, name)), name
    with pytest.raises(AttributeError):
        trajectory.no_such_name  # noqa: B018


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the openrlhf_ext modules that the file at ``path`` imports."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("openrlhf_ext")}


def _part(module: str) -> str:
    """core, format, tools (of the trajectory package), or the top package it lies in."""
    parts = module.split(".")
    if parts[:2] != ["openrlhf_ext", "trajectory"]:
        return parts[1] if len(parts) > 1 else ""
    return parts[2] if len(parts) > 2 and parts[2] in ("format", "tools") else "core"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    part = _part(".".join(path.relative_to(REPO).with_suffix("").parts))
    if path.parent == PACKAGE and path.name in ENTRY_POINTS:
        return
    forbidden = {"core": {"format", "tools", "integrations", *TRAINER_SIDE},
                 "format": {"tools", "integrations", *TRAINER_SIDE},
                 "tools": {"integrations", *TRAINER_SIDE}}[part]
    imported = _imported_modules(path)
    wrong = sorted(m for m in imported if _part(m) in forbidden)
    assert not wrong, f"{path.relative_to(REPO)} ({part}) imports {wrong}"
    if part == "format":  # of the core, only the file-name rules and the manifest reader (no torch)
        core = sorted(m for m in imported if _part(m) == "core" and not m.startswith("openrlhf_ext.trajectory.files"))
        assert not core, f"{path.relative_to(REPO)} (format) imports {core}"


CHECK_WITHOUT_TORCH = r"""
import runpy, sys
path = sys.argv[1]
from openrlhf_ext.trajectory import TrajectoryFormatError, load_trajectories
assert load_trajectories(path)
for command in ("validate", "stats"):
    sys.argv = ["openrlhf-traj", command, path]
    try:
        runpy.run_module("openrlhf_ext.trajectory", run_name="__main__")
    except SystemExit as done:
        assert done.code == 0, (command, done.code)
print("LOADED", sorted(m for m in ("torch", "transformers", "tokenizers", "jinja2", "tqdm") if m in sys.modules))
"""


def test_validate_stats_and_reading_start_without_torch(tmp_path, tokenizer):
    """`openrlhf-traj validate` and `stats`, and `load_trajectories`, answer in a fraction of a
    second: they never import torch, transformers or the report's and converters' libraries."""
    saver = make_saver(tmp_path, tokenizer)
    saver.save_step(1, step_experiences(tokenizer))
    res = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_TORCH, str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "LOADED []" in res.stdout, res.stdout
