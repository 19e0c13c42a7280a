"""``openrlhf-traj``: check, summarise, share and convert trajectory files from the command line.

    openrlhf-traj validate runs/demo/trajectories     # every problem, by file / record / field
    openrlhf-traj stats runs/demo/trajectories        # one line per step, plus its fork words
    openrlhf-traj report runs/demo/trajectories -o report.html
    openrlhf-traj convert SRC -o OUT_DIR

``validate`` and ``stats`` import neither torch nor the report's and converters' dependencies,
so they answer in a fraction of a second.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from ..args import ratio_type
from ..format import check_trajectories
from ..marks import SCOPES
from ..sampling import SAMPLING_MODES
from .stats import format_table, step_rows

PATH_HELP = "a trajectories_step_N.json file, a trajectories folder, or a run's save_path"


def cmd_validate(args) -> int:
    try:
        checked = check_trajectories(args.path)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for problem in checked.problems:
        print(problem)
    if checked.problems:
        print(f"INVALID: {len(checked.problems)} problem(s) in {len(checked.files)} file(s)", file=sys.stderr)
        return 1
    print(f"OK: {len(checked.files)} file(s), {checked.num_records} record(s)")
    return 0


def cmd_stats(args) -> int:
    notices: list = []
    try:
        rows = step_rows(args.path, top_words=args.top, notices=notices)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_notices("stats", notices)
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    else:
        print("\n".join(format_table(rows)))
    unreadable = sum("error" in row for row in rows)
    if unreadable:
        print(f"openrlhf-traj stats: {unreadable} of {len(rows)} file(s) could not be read", file=sys.stderr)
    return 1 if unreadable else 0


def print_notices(command: str, notices, level: str = "notice") -> None:
    """What the viewer would say about the files read (``read_lenient``'s notices), on stderr."""
    for notice in notices:
        print(f"openrlhf-traj {command}: {level}: {notice}", file=sys.stderr)


def cmd_report(args) -> int:
    from .report import LargeReportWarning, ReportError, human_size, write_report

    with _warnings_as_lines("report", LargeReportWarning):
        try:
            info = write_report(
                args.paths,
                args.output,
                steps=args.steps,
                max_trajectories_per_step=args.max_trajectories_per_step,
                gzip_data=args.gzip,
                title=args.title,
                viewer=args.viewer,
                include_run_files=not args.no_run_files,
                strict=args.strict,
                force=args.force,
            )
        except (ReportError, ValueError, OSError) as error:
            print(f"openrlhf-traj report: error: {error}", file=sys.stderr)
            return 2
    print_notices("report", info["notices"])
    print_notices("report", info["errors"], level="error (left out)")
    print(
        f"wrote {args.output}: {len(info['files'])} file(s), {info['num_records']} trajectories, "
        f"{human_size(info['size_bytes'])}"
    )
    return 1 if info["errors"] else 0


@contextlib.contextmanager
def _warnings_as_lines(command: str, category=Warning):
    """Warnings printed as one line each ("openrlhf-traj report: warning: ..."), every time."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"openrlhf-traj {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", category)
        warnings.showwarning = show
        yield


def cmd_convert(args) -> int:
    from .convert import convert
    from .errors import ConvertError
    from ..folder_lock import FolderInUse

    with _warnings_as_lines("convert"):
        try:
            result = convert(
                args.src,
                args.output,
                tokenizer=args.tokenizer,
                high_entropy_token_ratio=args.high_entropy_token_ratio,
                high_entropy_scope=args.high_entropy_scope,
                num_trajectories_per_step=args.num_trajectories_per_step,
                sampling=args.trajectory_sampling,
                seed=args.seed,
                steps=args.steps,
                overwrite=args.overwrite,
                strict=args.strict,
            )
        except (ConvertError, FolderInUse, ValueError, OSError) as error:
            print(f"openrlhf-traj convert: error: {error}", file=sys.stderr)
            return 2
    print_notices("convert", result["notices"])
    print_notices("convert", result["errors"], level="error (left out)")
    steps = result["steps"]
    print(f"wrote {len(steps)} step(s) ({steps[0]}..{steps[-1]}) from a {result['kind']} source to {result['out_dir']}")
    return 1 if result["errors"] else 0


def build_parser() -> argparse.ArgumentParser:
    """The ``openrlhf-traj`` parser. Building it imports no tool: each command imports its tool
    when it runs, so ``validate`` and ``stats`` never load torch, jinja2 or transformers."""
    parser = argparse.ArgumentParser(
        prog="openrlhf-traj",
        description="Check, summarise, share and convert trajectory files (FORMAT.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check files against the format; exit 1 when any problem is found")
    v.add_argument("path", help=PATH_HELP)
    v.set_defaults(func=cmd_validate)
    s = sub.add_parser("stats", help="a per-step table: entropy, threshold, percentiles, reward, fork words")
    s.add_argument("path", help=PATH_HELP)
    s.add_argument("--top", type=int, default=5, help="fork words shown per step (default 5)")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.set_defaults(func=cmd_stats)
    _add_report_parser(sub)
    _add_convert_parser(sub)
    return parser


def _add_report_parser(sub) -> None:
    parser = sub.add_parser(
        "report",
        help="write one HTML file holding the viewer and the chosen steps' trajectories",
        description="Write one self-contained HTML file (the viewer plus the data) that opens "
        "from disk with no network. Example: openrlhf-traj report runs/exp1/trajectories "
        "-o report.html --steps 1,5,10-20 --max_trajectories_per_step 8 --gzip",
    )
    parser.add_argument("paths", nargs="+", help="trajectory files or run folders (trajectories/)")
    parser.add_argument("-o", "--output", required=True, help="the HTML file to write")
    parser.add_argument("--steps", default=None, help="steps to include, e.g. 1,5,10-20 (default: all)")
    parser.add_argument(
        "--max_trajectories_per_step", type=int, default=None,
        help="keep only the first N trajectories of each step (default: all)",
    )
    parser.add_argument(
        "--gzip", action="store_true",
        help="embed the data gzip-compressed (decompressed in the page); much smaller files",
    )
    parser.add_argument("--title", default=None, help="title shown by the viewer")
    parser.add_argument(
        "--viewer", default=None,
        help="viewer HTML to embed (default: the repository's viewer/render_trajectories.html "
        "or the packaged copy)",
    )
    parser.add_argument(
        "--no_run_files", action="store_true",
        help="do not embed the run folder's manifest.jsonl and summary.json",
    )
    parser.add_argument(
        "--strict", action="store_true",
        help="refuse files that break FORMAT.md (what validate reports) instead of taking every file the "
             "viewer opens, with its notices",
    )
    parser.add_argument(
        "--force", action="store_true",
        help="replace an existing output that is not a report written by this tool (an input is never replaced)",
    )
    parser.set_defaults(func=cmd_report)


def _add_convert_parser(sub) -> None:
    parser = sub.add_parser(
        "convert",
        help="turn an npz entropy trace or rollout JSONL dumps into trajectory files",
        description="Convert SRC into trajectory files (trajectories_step_N.json, manifest.jsonl, "
        "summary.json). SRC is an entropy-trace folder (steps/step_NNNNNN.npz, ours from "
        "--save_entropy_trace or another trainer's) or a folder of rollout *.jsonl files with "
        "input/output/score/step. Example: openrlhf-traj convert runs/exp1/trajectories "
        "-o runs/exp1/all --tokenizer Qwen/Qwen2.5-0.5B --num_trajectories_per_step 64",
    )
    parser.add_argument("src", help="entropy-trace folder (with steps/*.npz) or rollout JSONL folder/file")
    parser.add_argument("-o", "--output", required=True, help="folder to write the trajectory files to")
    parser.add_argument(
        "--tokenizer", default=None,
        help="tokenizer folder, tokenizer.json or name, to decode npz token ids (default: the "
        "tokenizer our summary.json names)",
    )
    parser.add_argument(
        "--high_entropy_token_ratio", type=ratio_type, default=0.2,
        help="share of the step's response tokens marked high-entropy, in (0, 1] (default 0.2; FORMAT.md)",
    )
    parser.add_argument(
        "--high_entropy_scope", choices=SCOPES, default="step",
        help="mark the top ratio over the whole step (default) or inside each response",
    )
    parser.add_argument(
        "--num_trajectories_per_step", type=int, default=None,
        help="write N responses of each step (default: all; marks always use all)",
    )
    parser.add_argument(
        "--trajectory_sampling", choices=SAMPLING_MODES, default="first",
        help="which N, as the saver's flag: first (default), whole prompt groups, groups with the most "
             "high-entropy tokens (forks), random, or stratified by reward/score",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the random samplings (default 42)")
    parser.add_argument("--steps", default=None, help="steps to convert, e.g. 1,5,10-20 (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace trajectory files already in OUTPUT")
    parser.add_argument(
        "--strict", action="store_true",
        help="refuse step files that break FORMAT.md (what validate reports) instead of converting every "
             "file the viewer opens, with its notices",
    )
    parser.set_defaults(func=cmd_convert)


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `openrlhf-traj stats DIR | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
