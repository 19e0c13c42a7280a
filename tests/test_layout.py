"""The package's layout rules (docs/architecture.md), read from the source with `ast`: every import,
also the ones inside functions, counts.

- Imports between subpackages run one way: trainer -> ray -> models / rollout -> algo -> trajectory,
  utils below all; no cycle between subpackages.
- The trajectory saver core and its format (`trajectory/`, `trajectory/format/`) import nothing of
  the trainer side nor of the offline tools (`trajectory/tools/`): people who train with other
  frameworks use the saver alone.
- No module over 450 lines, and no function of the viewer over 60.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "openrlhf_ext"

# A unit may import only units of a lower layer (and itself). Units of one layer do not import each
# other. `trajectory` is the saver core with its format; `trajectory.tools` the offline tools.
LAYERS = [
    ("utils",),
    ("trajectory",),
    ("algo", "datasets", "rewards", "trajectory.tools"),
    ("models", "rollout"),
    ("ray",),
    ("trainer",),
    ("cli", "integrations"),
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
TRAINER_SIDE = ("algo", "models", "rollout", "ray", "trainer", "cli", "datasets", "rewards", "integrations")
# `python -m openrlhf_ext.trajectory` and the `openrlhf-traj` console script start the tools: they
# belong with them, wherever the tools' own modules live (trajectory/ before the split, tools/ after).
TRAJECTORY_ENTRY_POINTS = ("__main__", "cli")
MAX_LINES = 450
VIEWER = PACKAGE.parent / "viewer" / "render_trajectories.html"
MAX_VIEWER_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, name: str) -> set[str]:
    """Every openrlhf_ext module that ``path`` imports, anywhere in the file (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in found if m == "openrlhf_ext" or m.startswith("openrlhf_ext.")}


def unit_of(module: str) -> str | None:
    """The subpackage a module belongs to; None for the package root (its version string is for all)."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    if parts[0] == "trajectory" and len(parts) > 1 and parts[1] in ("tools", *TRAJECTORY_ENTRY_POINTS):
        return "trajectory.tools"
    return parts[0]


def unit_imports() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> the 'module -> module' lines that make the edge."""
    known = modules()
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in known.items():
        src = unit_of(name)
        for target in imported_modules(path, name):
            if target not in known and target.rpartition(".")[0] in known:
                continue  # `from pkg import name` where name is not a submodule: counted as pkg
            dst = unit_of(target)
            if src is not None and dst is not None and src != dst:
                edges.setdefault((src, dst), []).append(f"{name} -> {target}")
    return edges


def test_the_parser_sees_imports_inside_functions_and_relative_ones(tmp_path):
    # The rules below are only as good as this reading of the source.
    src = tmp_path / "probe.py"
    src.write_text("import json\nfrom ..algo import losses\nfrom . import stages\n\n"
                   "def f():\n    from openrlhf_ext.ray.launcher import start_ray\n")
    assert imported_modules(src, "openrlhf_ext.trainer.probe") == {
        "openrlhf_ext.algo", "openrlhf_ext.algo.losses", "openrlhf_ext.trainer", "openrlhf_ext.trainer.stages",
        "openrlhf_ext.ray.launcher", "openrlhf_ext.ray.launcher.start_ray"}
    assert unit_of("openrlhf_ext.trajectory.tools.cli") == unit_of("openrlhf_ext.trajectory.__main__") == "trajectory.tools"
    assert unit_of("openrlhf_ext.trajectory.cli") == "trajectory.tools"
    assert unit_of("openrlhf_ext.trajectory.format.schema") == unit_of("openrlhf_ext.trajectory.saver") == "trajectory"


def test_every_subpackage_has_a_layer():
    units = {unit_of(m) for m in modules()} - {None}
    missing = sorted(units - set(RANK))
    assert not missing, f"new subpackage(s) {missing}: give each a layer in LAYERS (and docs/architecture.md)"


def test_imports_run_one_way():
    wrong = [f"{src} imports {dst}: {', '.join(lines)}" for (src, dst), lines in sorted(unit_imports().items())
             if src in RANK and dst in RANK and RANK[dst] >= RANK[src]]
    assert not wrong, "imports against the direction trainer -> ray -> models/rollout -> algo -> trajectory -> utils:\n" + "\n".join(wrong)


def test_no_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for src, dst in unit_imports():
        graph.setdefault(src, set()).add(dst)
    # Depth-first search; a grey node met again closes a cycle.
    state: dict[str, str] = {}
    cycles = []

    def visit(node, path):
        state[node] = "grey"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "grey":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "black"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles between subpackages:\n" + "\n".join(cycles)


def test_the_trajectory_core_stands_alone():
    forbidden = set(TRAINER_SIDE) | {"trajectory.tools"}
    wrong = [line for (src, dst), lines in sorted(unit_imports().items()) if src == "trajectory" and dst in forbidden
             for line in lines]
    assert not wrong, "the saver core / format imports the trainer side or the offline tools:\n" + "\n".join(wrong)


def test_no_module_over_450_lines():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert len(lengths) > 40  # the whole package was read
    long = [f"{name}: {n} lines" for name, n in sorted(lengths.items()) if n > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines (do they hold two ideas?):\n" + "\n".join(long)


def viewer_functions() -> dict[str, int]:
    """Lines of each top-level function of the viewer's script. The file's style: a function starts
    at column 0 (``function name(`` or ``async function name(``) and a function of several lines
    ends with a ``}`` alone at column 0; one of a single line balances its braces on it."""
    lengths, start = {}, None
    for i, line in enumerate(VIEWER.read_text(encoding="utf-8").splitlines()):
        match = re.match(r"(?:async\s+)?function\*?\s+(\w+)", line)
        if match:
            name, start = match.group(1), i
            if line.count("{") and line.count("{") == line.count("}"):
                lengths[name], start = 1, None
        elif start is not None and line == "}":
            lengths[name], start = i - start + 1, None
    return lengths


def test_no_viewer_function_over_60_lines():
    lengths = viewer_functions()
    assert len(lengths) > 150  # the whole script was read
    long = [f"{name}: {n} lines" for name, n in sorted(lengths.items()) if n > MAX_VIEWER_FUNCTION_LINES]
    assert not long, f"viewer functions over {MAX_VIEWER_FUNCTION_LINES} lines (pure render functions, one job each):\n" + "\n".join(long)
