"""Read entropy traces in the npz layout, one step at a time, and turn them into records.

The layout (FORMAT.md, `steps/step_<NNNNNN>.npz`), written by our saver with --save_entropy_trace
and by other trainers' entropy-trace workflows:

    entropies       (R, L) float16  entropy (nats) of the distribution each response token came from
    response_mask   (R, L) bool     True on real response tokens (False on padding)
    responses       (R, L) int32    response token ids
    response_index  (R,)   int32    index of each response in the step's rollout batch
    optional, per response (R,) or per token (R, L): prompt_length, uid, sample_index, rewards,
    advantages

Only these files are trusted; other trainers' summary.json / manifest.jsonl carry other fields
(format_version 2), so the step number comes from the file name. Arrays are read without pickle
(`allow_pickle=False`): an object array (say a uid column of Python strings) is skipped with a
warning rather than unpickled from a file that may be hostile.

Example (a step of two responses, as the saver's --save_entropy_trace writes it; a toy byte-level
tokenizer, so token ids are bytes):
    >>> import tempfile
    >>> from openrlhf_ext.trajectory.files import write_npz
    >>> from openrlhf_ext.trajectory.toy import toy_tokenizer
    >>> path = Path(tempfile.mkdtemp()) / "step_000003.npz"
    >>> write_npz(path, {"entropies": np.array([[0.1, 2.0], [0.5, 0.0]], dtype=np.float16),
    ...                  "response_mask": np.array([[True, True], [True, False]]),
    ...                  "responses": np.array([list(b"ok"), [ord("!"), 0]], dtype=np.int32),
    ...                  "response_index": np.arange(2, dtype=np.int32)})
    >>> step = read_npz_step(path, 3)
    >>> step.num_responses, int(step.response_mask.sum())
    (2, 3)
    >>> records, info = npz_step_records(step, toy_tokenizer(), ratio=0.3)   # k = ceil(0.3 * 3) = 1
    >>> [[(t["text"], t["high_entropy"]) for t in r["pure_generated_tokens"]] for r in records]
    [[('o', False), ('k', True)], [('!', False)]]
    >>> info["threshold"], info["num_responses"]
    (2.0, 2)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..alternatives import fork_words
from ..files import STEPS_DIR, finite_or_none, list_npz_files, npz_step_of_file_name
from ..format.bounded import human_bytes
from ..marks import high_entropy_mask
from ..sampling import choose_responses
from .errors import ConvertError

REQUIRED_KEYS = ("entropies", "response_mask", "responses", "response_index")
OPTIONAL_KEYS = ("prompt_length", "uid", "sample_index", "rewards", "advantages")


@dataclass
class NpzStep:
    """One step's trace, validated. Arrays are numpy; rows are responses."""

    path: Path
    global_step: int
    entropies: np.ndarray  # (R, L) float32 entropy in nats; NaN/inf where the trace has no value
    response_mask: np.ndarray  # (R, L) bool, True on real response tokens
    responses: np.ndarray  # (R, L) integer token ids, dtype as stored (int32 in the layout)
    response_index: np.ndarray  # (R,) integer index of the response in the step's rollout batch
    extra: dict = field(default_factory=dict)  # name -> (R,) or (R, L) optional arrays

    @property
    def num_responses(self) -> int:
        return int(self.responses.shape[0])


def npz_steps_dir(src: Path) -> Path | None:
    """The folder holding step_NNNNNN.npz files for `src` (a run folder with steps/, or steps/
    itself), or None when there is none."""
    for folder in (src / STEPS_DIR, src):
        if folder.is_dir() and any(npz_step_of_file_name(p.name) is not None for p in folder.iterdir()):
            return folder
    return None


def find_npz_steps(folder: Path) -> list[tuple[int, Path]]:
    """(global_step, path) of every step_NNNNNN.npz in `folder`, sorted by step."""
    return list_npz_files(folder)


# The most a step's arrays may declare in all (from their .npy headers, checked before any is read):
# 8,192 responses x 32,768 tokens in the layout's dtypes are 1.9 GB. Converting needs about twice
# that again (float32 entropies, the marks), so a hostile header cannot take the machine's memory.
MAX_NPZ_STEP_BYTES = 2 << 30


def _declared_bytes(npz, key: str) -> int | None:
    """Bytes the array `key` will take once read, from its .npy header, without reading the data."""
    try:
        with npz.zip.open(key + ".npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
    except Exception:  # a broken header is reported by the real read that follows
        return None
    return int(np.prod(shape, dtype=np.float64)) * dtype.itemsize


def _read_key(npz, key: str, path: Path) -> np.ndarray | None:
    try:
        return np.asarray(npz[key])
    except ValueError as error:  # object arrays need pickle, which we never allow
        warnings.warn(f"{path}: skipping array {key!r}: {error}", stacklevel=3)
        return None
    except MemoryError as error:
        raise ConvertError(f"{path}: array {key!r} does not fit in memory: {error}") from error
    except Exception as error:  # zipfile, zlib, struct, numpy: a broken or hostile member, whatever it raises
        raise ConvertError(f"{path}: cannot read array {key!r}: {type(error).__name__}: {error}") from error


def _check_declared(npz, keys, path: Path) -> None:
    """A hostile or corrupt header can declare arrays far larger than the file: refuse the step
    before numpy allocates any of them, by their total."""
    declared = sum(_declared_bytes(npz, key) or 0 for key in keys)
    if declared > MAX_NPZ_STEP_BYTES:
        raise ConvertError(
            f"{path}: its arrays declare {human_bytes(declared)} in all, more than the {human_bytes(MAX_NPZ_STEP_BYTES)} "
            "a step may hold when read; the file is corrupt or not a step of a trace"
        )


def read_npz_step(path: Path, global_step: int) -> NpzStep:
    """Load and check one step file (see the module's example). Raises ConvertError naming the
    file and what is wrong."""
    path = Path(path)
    try:
        # Compressed npz members cannot be memory-mapped; each array is inflated once, and only
        # this step's arrays are alive at a time (the caller drops the NpzStep before the next).
        npz = np.load(path, allow_pickle=False)
    except Exception as error:  # zipfile, struct, numpy: a file from anywhere raises anything
        raise ConvertError(f"{path}: not a readable npz file: {type(error).__name__}: {error}") from error
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ConvertError(f"{path}: expected an npz archive of named arrays, found a single array")
    with npz:
        missing = [k for k in REQUIRED_KEYS if k not in npz.files]
        if missing:
            raise ConvertError(
                f"{path}: missing array(s) {', '.join(missing)}; an entropy trace step needs "
                f"{', '.join(REQUIRED_KEYS)} (has {', '.join(npz.files) or 'nothing'})"
            )
        _check_declared(npz, [k for k in REQUIRED_KEYS + OPTIONAL_KEYS if k in npz.files], path)
        arrays = {}
        for key in REQUIRED_KEYS:
            value = _read_key(npz, key, path)
            if value is None:
                raise ConvertError(f"{path}: array {key!r} is an object array; expected numbers")
            arrays[key] = value
        extra = {}
        for key in OPTIONAL_KEYS:
            if key in npz.files:
                value = _read_key(npz, key, path)
                if value is not None:
                    extra[key] = value

    entropies, mask, responses, index = (arrays[k] for k in REQUIRED_KEYS)
    if entropies.ndim != 2:
        raise ConvertError(f"{path}: 'entropies' must be 2-D (responses, tokens), got shape {entropies.shape}")
    shape = entropies.shape
    for key, value in (("response_mask", mask), ("responses", responses)):
        if value.shape != shape:
            raise ConvertError(f"{path}: {key!r} has shape {value.shape}, 'entropies' has {shape}")
    if index.shape != (shape[0],):
        raise ConvertError(f"{path}: 'response_index' has shape {index.shape}, expected ({shape[0]},)")
    if not np.issubdtype(entropies.dtype, np.floating):
        raise ConvertError(f"{path}: 'entropies' has dtype {entropies.dtype}, expected floats")
    if mask.dtype != np.bool_:
        if not (np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all()):
            raise ConvertError(f"{path}: 'response_mask' has dtype {mask.dtype}, expected bool")
        mask = mask.astype(bool)
    for key, value in (("responses", responses), ("response_index", index)):
        if not np.issubdtype(value.dtype, np.integer):
            raise ConvertError(f"{path}: {key!r} has dtype {value.dtype}, expected integers")
    ids = responses[mask]
    if ids.size and ids.min() < 0:
        row = int(np.argwhere(mask & (responses < 0))[0][0])
        raise ConvertError(f"{path}: response row {row} has a negative token id")
    for key, value in list(extra.items()):
        if value.shape[:1] != (shape[0],) or value.ndim > 2 or (value.ndim == 2 and value.shape != shape):
            warnings.warn(
                f"{path}: skipping {key!r} of shape {value.shape} (expected ({shape[0]},) or {shape})",
                stacklevel=2,
            )
            del extra[key]
    return NpzStep(
        path=path,
        global_step=global_step,
        entropies=entropies.astype(np.float32),
        response_mask=mask,
        responses=responses,  # kept as stored: .tolist() gives Python ints either way
        response_index=index,
        extra=extra,
    )


def per_response(step: NpzStep, key: str, reduce: str = "mean") -> list | None:
    """The optional array `key` as one Python value per response (None where not finite).

    A per-token (R, L) array is reduced over the response's tokens: "mean" (advantages) or "sum"
    (token-level rewards, which sit on the last token).
    """
    value = step.extra.get(key)
    if value is None:
        return None
    if value.ndim == 2:
        masked = np.where(step.response_mask, value.astype(np.float64), 0.0)
        total = masked.sum(axis=1)
        if reduce == "mean":
            total = total / np.maximum(step.response_mask.sum(axis=1), 1)
        value = total
    return [finite_or_none(item) if isinstance(item, float) else item for item in value.tolist()]


# ----------------------------------------------------------------------------- records

def _vocab_size(tokenizer) -> int | None:
    if hasattr(tokenizer, "get_vocab_size"):  # a raw tokenizers.Tokenizer
        return tokenizer.get_vocab_size(with_added_tokens=True)
    try:
        return len(tokenizer)
    except TypeError:
        return None


def _step_marks(step: NpzStep, ratio: float, scope: str):
    """(marks (R, L) bool numpy, threshold float | None, per-response thresholds | None) over ALL
    responses of the step, as FORMAT.md defines, by the core's high_entropy_mask."""
    import torch

    entropy = torch.from_numpy(step.entropies)  # (R, L) float32
    mask = torch.from_numpy(step.response_mask)  # (R, L) bool
    marks, threshold = high_entropy_mask(entropy, mask, ratio, scope=scope)
    marks = marks.numpy() if hasattr(marks, "numpy") else np.asarray(marks)
    if scope == "response":
        per_row = threshold.tolist() if hasattr(threshold, "tolist") else list(threshold)
        return marks, None, [finite_or_none(t) for t in per_row]
    return marks, finite_or_none(threshold), None


def npz_step_records(step: NpzStep, tokenizer, ratio: float, scope: str = "step", limit: int | None = None,
                     sampling: str = "first", seed: int = 0):
    """(records iterator, step_info) of one npz step.

    The marks are computed over ALL responses of the step first (FORMAT.md); then `limit`
    responses, picked as the saver picks them (`sampling`: first, groups, forks, random,
    stratified; seeded with `seed` + the step), become records (build_record, token_texts) one at
    a time, so a caller that serialises each record before taking the next holds one record's
    objects at most. `step_info` holds the manifest entry's numbers, over all the step's responses.

    The trace has no prompt ids, so a record's tokens are the response's alone; it has no returns
    (`return` is null) and no log-probs. `response_index`, `prompt_length`, `sample_index` and
    `uid` go into `info`. Entropies are the trace's float16 values.
    """
    from ..records import build_record  # torch: imported when an npz step is converted, not before

    marks, threshold, row_thresholds = _step_marks(step, ratio, scope)
    vocab = _vocab_size(tokenizer)
    rewards = per_response(step, "rewards", reduce="sum")
    advantages = per_response(step, "advantages", reduce="mean")
    info_columns = {k: per_response(step, k) for k in ("prompt_length", "sample_index", "uid")}
    group_index = _group_index(step)
    rows = range(step.num_responses)
    if limit is not None:
        rows = choose_responses(
            group_index or list(rows),
            [np.nan if r is None else r for r in rewards] if rewards else [np.nan] * step.num_responses,
            limit, sampling, seed=seed + step.global_step, forks=marks.sum(-1).tolist(),
        )

    def records():
        for row in rows:
            keep = step.response_mask[row]  # (L,) bool
            ids = step.responses[row][keep].tolist()  # (T,) token ids of the response
            if vocab is not None and ids and max(ids) >= vocab:
                raise ConvertError(
                    f"{step.path}: response row {row} has token id {max(ids)}, outside the "
                    f"tokenizer's vocabulary of {vocab}: is --tokenizer the model's tokenizer?"
                )
            info = {"reward": rewards[row] if rewards else None, "response_index": int(step.response_index[row])}
            for key, column in info_columns.items():
                if column is not None:
                    info[key] = column[row]
            yield build_record(
                tokenizer,
                global_step=step.global_step,
                experience_index=0,  # a trace keeps no micro-batch split; response_index orders it
                sample_in_exp=int(step.response_index[row]),
                prompt_ids=[],
                response_ids=ids,
                entropy=step.entropies[row][keep].tolist(),
                log_probs=[None] * len(ids),
                high_entropy=marks[row][keep].tolist(),
                advantages=advantages[row] if advantages else None,
                returns=None,
                info=info,
                threshold=threshold if row_thresholds is None else row_thresholds[row],
                ratio=ratio,
                group_index=group_index[row] if group_index else None,
            )

    step_info = {
        "num_responses": step.num_responses,
        "entropies": step.entropies[step.response_mask],  # (N,) every response token of the step
        "rewards": rewards,
        "threshold": threshold,
        # the whole step's fork words, read as the saver reads them (each token's own text)
        "fork_words": fork_words(tokenizer, step.responses[marks & step.response_mask]),
    }
    return records(), step_info


def _group_index(step: NpzStep) -> list[int] | None:
    """The prompt group of each response, from `uid` (ints as they are, strings numbered in order of
    first appearance), for the viewer's group-by-prompt."""
    uid = step.extra.get("uid")
    if uid is None or uid.ndim != 1:
        return None
    if np.issubdtype(uid.dtype, np.integer):
        return [int(u) for u in uid.tolist()]
    numbering: dict = {}
    return [numbering.setdefault(u, len(numbering)) for u in uid.tolist()]

