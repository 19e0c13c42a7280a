"""Lossless per-token texts: `token_texts(tokenizer, ids) -> list[str]`.

The contract (FORMAT.md, "Token texts"):
- joined, the texts equal the decoded text of the same ids;
- each character belongs to the token that holds its last byte: a character that a byte-level
  tokenizer splits over several tokens goes whole to the token that completes it, and a token
  that completes no character carries "";
- no text contains U+FFFD unless the decoded text does.

`tokenizer.decode([id])` per token, the usual approach, breaks all three: every piece of a split
emoji or CJK character decodes to U+FFFD, and SentencePiece decoders strip the leading space of
every single-token decode. Decoding growing prefixes is right but quadratic.

How it is done, in linear time:
1. Once per tokenizer, each token id is mapped (lazily, on first sight) to what the tokenizer's
   decoder makes of it on its own: raw bytes for byte-level BPE (GPT-2/Qwen/Llama-3/DeepSeek),
   text for SentencePiece-style decoders, one byte for byte-fallback tokens such as <0xE4>, text
   for WordPiece (texts_table.py, `TokenTable`).
2. Per row, the pieces are looked up; where bytes split characters, `codecs.utf_8_decode` hands
   each character to the token that completes it (no decode of growing prefixes).
3. The joined texts are checked against the decoded text (one decode of the whole row, which the
   caller may already have: `decoded=`; by default, once the model has matched `decode` on a
   calibration batch, rows are not decoded again: `verify=`). When they differ (a decoder not modelled, transformers'
   `clean_up_tokenization_spaces`, a `decode` override), the decoded text is re-cut along the
   token boundaries by a linear two-pointer alignment, so the result is lossless regardless.
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Sequence

from .texts_table import TokenTable, model_texts, table_for, unknown_token_text

__all__ = ["token_texts", "token_texts_batch"]

# ----------------------------------------------------------------------------- input handling


def _as_id_list(ids: Any) -> list[int]:
    """A 1-D sequence of ids (list, tuple, numpy, torch) as a Python list, converted once."""
    if hasattr(ids, "tolist"):  # numpy array or torch tensor: one conversion, no per-item .item()
        if getattr(ids, "ndim", 1) != 1:
            raise ValueError(f"token_texts expects 1-D ids, got shape {tuple(ids.shape)}")
        ids = ids.tolist()
    ids = list(ids)
    if ids and type(ids[0]) is not int:  # e.g. a list of numpy scalars: Rust decode wants ints
        ids = [int(i) for i in ids]
    if ids and min(ids) < 0:
        raise ValueError(f"token ids must be non-negative, got {min(ids)}")
    return ids


def _decode_rows(tokenizer: Any, rows: list[list[int]], decode_kwargs: dict) -> list[str]:
    """The reference texts: exactly what `tokenizer.decode(row, **decode_kwargs)` returns."""
    skip = bool(decode_kwargs.get("skip_special_tokens", False))
    if not hasattr(tokenizer, "backend_tokenizer") and hasattr(tokenizer, "decode_batch"):
        # raw tokenizers.Tokenizer: its decode defaults to skip_special_tokens=True, ours to False
        return [tokenizer.decode(row, skip_special_tokens=skip) for row in rows]
    cleanup = _hf_cleanup(tokenizer, decode_kwargs)
    if cleanup is None:
        return [tokenizer.decode(row, **decode_kwargs) for row in rows]
    # transformers' decode of a fast tokenizer is the Rust decode plus an optional cleanup; its
    # Python wrapping costs about 3x the Rust call, so do the same two steps directly.
    backend = tokenizer.backend_tokenizer
    texts = [backend.decode(row, skip_special_tokens=skip) for row in rows]
    return [tokenizer.clean_up_tokenization(t) for t in texts] if cleanup else texts


def _hf_cleanup(tokenizer: Any, decode_kwargs: dict) -> bool | None:
    """Whether transformers' decode would clean up spaces; None if its decode is not the plain one."""
    known = {"skip_special_tokens", "clean_up_tokenization_spaces"}
    if not _plain_fast_decode(tokenizer) or not set(decode_kwargs) <= known:
        return None
    cleanup = decode_kwargs.get("clean_up_tokenization_spaces")
    if cleanup is None:
        cleanup = tokenizer.clean_up_tokenization_spaces
    bpe_guard = type(tokenizer.backend_tokenizer.model).__name__ == "BPE" and not (
        tokenizer.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output
    )
    return bool(cleanup) and not bpe_guard


def _decode_is_modelled(tokenizer: Any, decode_kwargs: dict) -> bool:
    """True when `decode` is the tokenizers decode itself, so the table predicts it exactly."""
    if not hasattr(tokenizer, "backend_tokenizer"):
        return hasattr(tokenizer, "decode_batch") and set(decode_kwargs) <= {"skip_special_tokens"}
    return _hf_cleanup(tokenizer, decode_kwargs) is False


def _plain_fast_decode(tokenizer: Any) -> bool:
    """True when `tokenizer.decode` is transformers' own fast-tokenizer decode, not an override."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # another transformers layout: take the documented call
        return False
    cls = type(tokenizer)
    return (
        isinstance(tokenizer, TokenizersBackend)
        and cls.decode is PreTrainedTokenizerBase.decode
        and cls._decode is TokenizersBackend._decode
        and hasattr(tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output")
    )


# ----------------------------------------------------------------------------- realignment

_WINDOW = 24  # how far (in chars, both sides together) the aligner looks to resynchronise
_ANCHOR = 8  # how many equal chars count as back in sync


def _align(texts: list[str], decoded: str) -> list[str]:
    """Re-cut `decoded` along the token boundaries of `texts`, which are close but not equal.

    When they differ only in whitespace, non-space chars keep their token (`_align_spaces`).
    Otherwise it walks both strings; equal chars keep their token. At a difference it looks for
    the cheapest skip on either side after which `_ANCHOR` chars agree; the decoded chars of the gap go to
    the token of the last model char replaced (the token holding the "last byte"), or, for a pure
    insertion, to the token before (at the very start: the token of the next model char).
    Linear when differences are local (stripped or cleaned-up spaces, a quirk at the first token);
    always lossless, because it only cuts `decoded`. With no resync in reach, the rest of
    `decoded` is spread over the remaining tokens in proportion.
    """
    n = len(texts)
    if n == 0:
        return []
    model = "".join(texts)
    owner = [j for j, t in enumerate(texts) for _ in range(len(t))]
    counts = _align_spaces(model, owner, decoded, n)
    if counts is None:
        counts = _align_resync(model, owner, decoded, n)
    cut, acc = [0] * n, 0  # cut[j]: how many decoded chars tokens 0..j own
    for j in range(n):
        acc += counts[j]
        cut[j] = acc
    return [decoded[a:b] for a, b in zip([0] + cut[:-1], cut)]


def _align_spaces(model: str, owner: list[int], decoded: str, n: int) -> list[int] | None:
    """Per-token char counts when `model` and `decoded` differ only in whitespace (decoders that
    add, move or clean up spaces), else None. A space only in `decoded` goes to the token of the
    next non-space model char (the leading-space convention of GPT-2 and SentencePiece)."""
    counts = [0] * n
    la, i = len(model), 0
    for c in decoded:
        if i < la and model[i] == c:
            counts[owner[i]] += 1
            i += 1
            continue
        while i < la and model[i].isspace():  # a model space that decode dropped
            i += 1
        if i < la and model[i] == c:
            counts[owner[i]] += 1
            i += 1
        elif c.isspace():
            counts[owner[i] if i < la else n - 1] += 1
        else:
            return None
    return counts if model[i:].isspace() or i >= la else None


def _align_resync(model: str, owner: list[int], decoded: str, n: int) -> list[int]:
    """Per-token char counts by a two-pointer walk that resynchronises after any difference."""
    la, ld = len(model), len(decoded)
    counts = [0] * n
    i = k = 0
    last = 0  # owner of the last model char consumed

    def synced(a: int, d: int) -> bool:
        if a >= la or d >= ld:
            return a >= la and d >= ld
        m = min(_ANCHOR, max(la - a, ld - d))
        return model[a:a + m] == decoded[d:d + m]

    while k < ld:
        if i < la and model[i] == decoded[k]:
            last = owner[i]
            counts[last] += 1
            i += 1
            k += 1
            continue
        found = None
        for cost in range(1, _WINDOW + 1):
            for da in range(cost, -1, -1):
                dd = cost - da
                if i + da <= la and k + dd <= ld and synced(i + da, k + dd):
                    found = (da, dd)
                    break
            if found:
                break
        if found is None:
            # No resync nearby: spread the rest over the remaining tokens in proportion (lossless).
            rest_a = max(la - i, 1)
            for kk in range(k, ld):
                a = min(i + (kk - k) * rest_a // (ld - k), la - 1)
                last = max(last, owner[a]) if la else n - 1
                counts[last] += 1
            k = ld
            break
        da, dd = found
        if da:
            last = owner[i + da - 1]
        elif i == 0:  # inserted before any model char: to the token of the next one, or the last
            last = owner[0] if la else n - 1
        counts[last] += dd
        i += da
        k += dd
    return counts


# ----------------------------------------------------------------------------- one row


def _row_texts(table: TokenTable, ids: list[int], decoded: str | None, skip_special: bool,
               mark_unknown: bool = True) -> list[str]:
    """One row. `decoded` is the reference text, or None to trust the model (exact decoders only).
    Ids past the vocabulary carry `unknown_token_text` (or "" without `mark_unknown`, as decode)."""
    if not ids:
        return []
    if table.size is not None and max(ids) >= table.size:  # decode drops them: the texts of the others
        known = [i for i in ids if i < table.size]
        texts = iter(_row_texts(table, known, decoded, skip_special) if known else [])
        if mark_unknown:
            table.note_unknown(ids)
        return [next(texts) if i < table.size else unknown_token_text(i) if mark_unknown else "" for i in ids]
    if table.kind == "generic":  # per-id decodes, re-cut along the row's decoded text
        gone = table.special if skip_special else ()
        return _align(["" if i in gone else table.generic_piece(i) for i in ids], decoded)
    looked = table.lookup(ids)
    dropped = None
    if (table.absent and not table.absent.isdisjoint(ids)) or (
        skip_special and table.special and not table.special.isdisjoint(ids)
    ):
        # Ids the decoder never sees (unknown ids; special tokens when skipped) carry "".
        gone = table.absent | table.special if skip_special else table.absent
        dropped = [i in gone for i in ids]
        ids = [i for i, d in zip(ids, dropped) if not d]
        looked = [t for t, d in zip(looked, dropped) if not d]
    texts = model_texts(table, ids, looked) if ids else []
    if decoded is not None and "".join(texts) != decoded:
        texts = _align(texts, decoded) if texts else []
    if dropped is not None:
        it = iter(texts)
        texts = ["" if d else next(it) for d in dropped]
        if not ids and decoded:  # nothing kept, yet text came out: give it to the last token
            texts[-1] = decoded
    return texts


def _calibrated(table: TokenTable, tokenizer: Any, kwargs: dict, skip: bool) -> bool:
    """Does the table's model give exactly `decode` on a seeded batch of random ids? Once per
    tokenizer and skip setting: 48 rows of 40 ids, over the whole vocabulary, unknown ids past it,
    and rows that start with each special token (the first token is where decoders differ most)."""
    hit = table.calibrated.get(skip)
    if hit is None:
        rng = random.Random(0)
        size = len(table.piece) + 2
        rows = [[rng.randrange(size) for _ in range(40)] for _ in range(48)]
        rows += [[i] + rows[k][:20] for k, i in enumerate(sorted(table.special)[:16])]
        want = _decode_rows(tokenizer, rows, kwargs)
        hit = all("".join(_row_texts(table, r, None, skip, mark_unknown=False)) == w for r, w in zip(rows, want))
        table.calibrated[skip] = hit
    return hit


# ----------------------------------------------------------------------------- public API


def token_texts(
    tokenizer: Any,
    ids: Sequence[int] | Any,
    decoded: str | None = None,
    decode_kwargs: dict | None = None,
    verify: bool | str = "auto",
) -> list[str]:
    """Per-token texts of `ids` that join to exactly the decoded text (FORMAT.md "Token texts").

    Args:
        tokenizer: a `transformers` fast tokenizer, a raw `tokenizers.Tokenizer`, or (slower, through
            the realigning path) any tokenizer with `decode`.
        ids: 1-D token ids: list, tuple, numpy array or torch tensor (converted once with `.tolist()`).
        decoded: the text the texts must join to, when the caller already decoded the row (the saver's
            `generated_text`); by default `tokenizer.decode(ids, **decode_kwargs)`.
        decode_kwargs: the keyword arguments of that decode call; default `skip_special_tokens=False`
            (also for raw `tokenizers.Tokenizer`, whose own default is True). With
            `skip_special_tokens=True` special tokens carry "". Any `clean_up_tokenization_spaces`
            is honoured too: the texts are re-cut from the decoded text when it differs.
        verify: whether to decode each row and re-cut the texts along it when they differ.
            True: always. False: not where the tokenizer's decoder is one modelled exactly here
            (ByteLevel; Metaspace/Replace/ByteFallback/Fuse/Strip; WordPiece) and `decode` is
            transformers' own without space cleanup. "auto" (default): as False once the model has
            matched `decode` on a seeded calibration batch of random ids for this tokenizer (so an
            unexpected decoder variant falls back to verifying), else as True. Unmodelled decoders,
            cleanup and `decode` overrides are always decoded. Unused when `decoded` is given.

    Returns:
        one string per id. A character split over several tokens belongs to the token holding its
        last byte; tokens that complete no character carry "". No U+FFFD unless `decoded` has one.
        An id past the tokenizer's vocabulary, which decode drops, carries the placeholder
        "<unk:ID>" (``unknown_token_text``) and a warning is logged: only there do the texts
        not join to the decoded text.

    Example (a byte-level BPE that splits the emoji as "Hi" | " " + 2 bytes | 1 byte | 1 byte):
        >>> ids = tokenizer.encode("Hi 😊")                      # doctest: +SKIP
        >>> token_texts(tokenizer, ids)                          # doctest: +SKIP
        ['Hi', ' ', '', '😊']
        >>> [tokenizer.decode([i]) for i in ids]                 # doctest: +SKIP
        ['Hi', ' �', '�', '�']
        >>> token_texts(tokenizer, ids, decoded=text)            # doctest: +SKIP
    """
    texts = None if decoded is None else [decoded]
    return token_texts_batch(tokenizer, [ids], texts, decode_kwargs, verify)[0]


def token_texts_batch(
    tokenizer: Any,
    rows: Iterable[Sequence[int] | Any],
    decoded: Sequence[str] | None = None,
    decode_kwargs: dict | None = None,
    verify: bool | str = "auto",
) -> list[list[str]]:
    """`token_texts` over many rows (a list of 1-D ids, or a 2-D numpy array / tensor with no padding
    to strip), sharing one table lookup. `decoded`, when given, holds one decoded text per row.

    Example:
        >>> rows = [tokenizer.encode("Hi"), tokenizer.encode("Hi 😊")]  # doctest: +SKIP
        >>> token_texts_batch(tokenizer, rows)                       # doctest: +SKIP
        [['Hi'], ['Hi', ' ', '', '😊']]

    With the toy byte-level tokenizer (one token per byte), which runs here:
        >>> from openrlhf_ext.trajectory.toy import toy_tokenizer
        >>> token_texts_batch(toy_tokenizer(), [list(b"Hi"), list("a😊".encode())])
        [['H', 'i'], ['a', '', '', '', '😊']]
    """
    kwargs = {"skip_special_tokens": False}
    kwargs.update(decode_kwargs or {})
    if hasattr(rows, "tolist"):  # a 2-D array or tensor: one conversion for the whole batch
        rows = rows.tolist()
    id_rows = [_as_id_list(r) for r in rows]
    if decoded is not None and len(decoded) != len(id_rows):
        raise ValueError(f"got {len(decoded)} decoded texts for {len(id_rows)} rows")
    if not id_rows:
        return []
    if verify not in (True, False, "auto"):
        raise ValueError(f'verify must be True, False or "auto", got {verify!r}')
    table = table_for(tokenizer)
    skip = bool(kwargs.get("skip_special_tokens", False))
    if decoded is None:
        if (
            verify is True
            or table.kind == "generic"
            or not _decode_is_modelled(tokenizer, kwargs)
            or (verify == "auto" and not _calibrated(table, tokenizer, kwargs, skip))
        ):
            decoded = _decode_rows(tokenizer, id_rows, kwargs)
        else:
            decoded = [None] * len(id_rows)
    return [_row_texts(table, r, d, skip) for r, d in zip(id_rows, decoded)]
