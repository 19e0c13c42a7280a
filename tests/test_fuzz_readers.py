"""Random and hostile bytes and JSON fed to every reader: ``load_trajectories``, ``validate``,
``stats``, ``report`` and ``convert`` end in bounded time and memory with exit code 0, 1 or 2 and
a message, never a traceback.

The commands run in-process through their ``main()`` (what the console script calls), over run
folders that hypothesis fills: step files (JSON of any shape, records with fields of any type,
deep nesting, huge numbers, lone surrogates, NaN literals, random bytes, gzip of those, cut-off
gzip), manifests and summaries. The gzip bombs run in a process of their own under an
address-space limit (resource.setrlimit), which a reader that inflates them whole would exceed.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openrlhf_ext.trajectory import TrajectoryFormatError, load_trajectories
from openrlhf_ext.trajectory.tools.cli import main
from tests.quirky_inputs import record
from tests.test_hostile_input import GiB, REPO

# Strings with what breaks readers: lone surrogates, bidi controls, markup, NUL, long runs.
TEXT = st.text(alphabet=st.sampled_from(list("ab <>/&\"\\\n\x00é😀\u202e") + ["\ud800", "\udfff"]), max_size=12)
NUMBER = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([10**20, -(10**19), 2**64, 1e308, 5e-324]))
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(TEXT, inner, max_size=4)), max_leaves=20)
TOKEN = st.one_of(JSON, st.fixed_dictionaries({}, optional={
    "text": st.one_of(TEXT, JSON), "high_entropy": st.one_of(st.booleans(), JSON),
    "entropy_score": st.one_of(NUMBER, JSON), "prompt": st.one_of(st.booleans(), JSON),
    "id": st.one_of(NUMBER, JSON), "logprob": NUMBER}))
FIELDS = ("global_step", "experience_index", "sample_in_exp", "generated_text", "pure_generated_text", "advantages",
          "return", "info", "prompt_text", "group_index", "high_entropy_threshold", "label")
RECORD = st.one_of(JSON, st.builds(
    lambda over, gen, pure: {**record(), **over, **gen, **pure},
    st.dictionaries(st.sampled_from(FIELDS), st.one_of(JSON, NUMBER), max_size=4),
    st.one_of(st.just({}), st.fixed_dictionaries({"generated_tokens": st.one_of(st.lists(TOKEN, max_size=5), JSON)})),
    st.one_of(st.just({}), st.fixed_dictionaries({"pure_generated_tokens": st.one_of(st.lists(TOKEN, max_size=5), JSON)}))))


def _dumps(value) -> bytes:
    # Python's json, as other tools write: NaN/Infinity literals, lone surrogates as \ud800 escapes
    return json.dumps(value).encode()


def _deep(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


def _deep_field(field: str, depth: int) -> bytes:
    """A good record whose `field` holds a value `depth` levels deep (parses; too deep to repr or write back)."""
    good = _dumps([record()])
    return good[:-2] + f', "{field}": '.encode() + b"[" * depth + b"1" + b"]" * depth + b"}]"


STEP_BYTES = st.one_of(
    st.builds(_deep_field, st.sampled_from(FIELDS + ("generated_tokens", "pure_generated_tokens")),
              st.integers(250, 1100)),
    st.lists(RECORD, max_size=4).map(_dumps),
    JSON.map(_dumps),
    st.binary(max_size=200),
    st.builds(_deep, st.integers(200, 120_000), st.sampled_from(["[", '{"a":'])),
    st.sampled_from([b"[1e999]", b'[{"pure_generated_tokens": [], "advantages": 1e999}]', b"[" + b"9" * 5000 + b"]",
                     b"[NaN, Infinity, -Infinity]", b"[]", b"", b'["\\ud800"]', b"\xff\xfe[]"]),
)
# What becomes of a step file's bytes on disk: as they are, gzip, cut-off gzip, flipped deflate bytes.
WRAP = st.sampled_from(["plain", "gzip", "cut", "flip"])
MANIFEST = st.one_of(st.lists(st.one_of(JSON.map(_dumps), st.binary(max_size=40)), max_size=4).map(b"\n".join),
                     st.binary(max_size=100))


def _wrap(data: bytes, how: str) -> tuple[str, bytes]:
    if how == "plain":
        return ".json", data
    packed = bytearray(gzip.compress(data))
    if how == "cut":
        packed = packed[: max(2, len(packed) // 2)]
    elif how == "flip":
        packed[min(12, len(packed) - 1)] ^= 0xFF
    return ".json.gz", bytes(packed)


def _run(argv) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps=st.lists(st.tuples(STEP_BYTES, WRAP), min_size=1, max_size=3), manifest=st.one_of(st.none(), MANIFEST),
       summary=st.one_of(st.none(), JSON.map(_dumps), st.binary(max_size=50)))
def test_every_reader_ends_with_a_message_never_a_traceback(steps, manifest, summary):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        for step, (data, how) in enumerate(steps, start=1):
            suffix, content = _wrap(data, how)
            (run / f"trajectories_step_{step}{suffix}").write_bytes(content)
        if manifest is not None:
            (run / "manifest.jsonl").write_bytes(manifest)
        if summary is not None:
            (run / "summary.json").write_bytes(summary)
        started = time.monotonic()
        for strict in (True, False):
            try:
                load_trajectories(run, strict=strict)
            except TrajectoryFormatError as error:
                assert strict and error.problems
        for argv in (["validate", run], ["stats", run], ["stats", run, "--json"],
                     ["report", run, "-o", Path(tmp) / "r.html"], ["report", run, "-o", Path(tmp) / "s.html", "--strict"],
                     ["convert", run, "-o", Path(tmp) / "out"], ["validate", Path(tmp) / "out"]):
            if argv[0] == "validate" and not Path(argv[1]).exists():
                continue  # convert refused everything: nothing to validate
            code, err = _run(argv)
            assert code in (0, 1, 2) and "Traceback" not in err, (argv, code, err)
        if (Path(tmp) / "out" / "manifest.jsonl").exists():  # what convert wrote is FORMAT.md
            assert _run(["validate", Path(tmp) / "out"])[0] == 0
        assert time.monotonic() - started < 60


# Every reader over one run folder, each in turn, in this process under an address-space limit:
# the exit codes, and any traceback, on stdout as JSON.
EVERY_READER = r"""
import contextlib, io, json, resource, sys, traceback
limit, run, tmp = int(sys.argv[1]), sys.argv[2], sys.argv[3]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from openrlhf_ext.trajectory import TrajectoryFormatError, load_trajectories
from openrlhf_ext.trajectory.tools.cli import main
codes = {}
for name, argv in [("load", None), ("validate", ["validate", run]), ("stats", ["stats", run]),
                   ("report", ["report", run, "-o", tmp + "/r.html"]), ("convert", ["convert", run, "-o", tmp + "/out"])]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            if argv is None:
                try:
                    load_trajectories(run)
                    codes[name] = 0
                except TrajectoryFormatError:
                    codes[name] = 1
            else:
                codes[name] = main(argv)
    except BaseException:
        codes[name] = traceback.format_exc()
    codes[name + " stderr"] = err.getvalue()[-500:]
print(json.dumps(codes))
"""


def _bomb(expanded: int, one_stream: bool, cut: bool) -> bytes:
    """gzip of `expanded` bytes of zeros: one deflate stream, or 64 MiB members in a row; `cut`
    drops its last bytes. Made in 16 MiB pieces, so the test itself stays small."""
    if one_stream:
        packer, zeros = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), bytes(16 << 20)
        data = b"".join([packer.compress(zeros) for _ in range(expanded // len(zeros))] + [packer.flush()])
    else:
        data = gzip.compress(bytes(64 << 20), compresslevel=9) * (expanded // (64 << 20))
    return data[: len(data) - 7] if cut else data


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.sampled_from([("one stream", 600 << 20), ("one stream", 1 * GiB), ("members", 3 * GiB),
                             ("members", 6 * GiB)]),
       cut=st.booleans(), where=st.sampled_from(["trajectories_step_2.json.gz", "manifest.jsonl", "summary.json"]))
def test_gzip_bombs_are_read_in_bounded_memory(size, cut, where):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        (run / "trajectories_step_1.json").write_text(json.dumps([record(step=1)]))
        (run / where).write_bytes(_bomb(size[1], size[0] == "one stream", cut))
        res = subprocess.run([sys.executable, "-c", EVERY_READER, str(2 * GiB), str(run), tmp], capture_output=True,
                             text=True, timeout=300, cwd=REPO, env={"PYTHONPATH": str(REPO), "MALLOC_ARENA_MAX": "2"})
        assert res.returncode == 0, res.stderr[-3000:]
        codes = json.loads(res.stdout)
        for name in ("load", "validate", "stats", "report", "convert"):
            assert codes[name] in (0, 1, 2), (name, codes[name])
            assert "Traceback" not in codes[name + " stderr"], (name, codes[name + " stderr"])
