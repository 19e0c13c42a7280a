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

How this module does it, in linear time:
1. Once per tokenizer, map every token id to what its decoder makes of it on its own (a
   `_TokenTable`): raw bytes for byte-level BPE (GPT-2/Qwen/Llama-3/DeepSeek, through the
   bytes_to_unicode table), text for SentencePiece-style decoders (Metaspace or
   Replace("▁", " ")), a single byte for byte-fallback tokens such as <0xE4>, and text for WordPiece.
2. Per row, look the pieces up; where bytes split characters, an incremental UTF-8 decoder hands
   each character to the token that completes it (one C call per token, no growing prefixes).
3. Verify the joined texts against the decoded text (one decode of the whole row, which the caller
   may already have, see `decoded=`). When they differ (a decoder we do not model, HF's
   `clean_up_tokenization_spaces`, a normalizer), re-align the decoded text onto the tokens with a
   linear two-pointer alignment, so the result is lossless whatever the tokenizer does.
"""

from __future__ import annotations

import codecs
from codecs import utf_8_decode
import json
import re
import threading
import weakref
from itertools import accumulate
from typing import Any, Iterable, Sequence

__all__ = ["token_texts", "token_texts_batch"]

# ----------------------------------------------------------------------------- input handling


def _as_id_list(ids: Any) -> list[int]:
    """A 1-D sequence of ids (list, tuple, numpy, torch) as a Python list, converted once."""
    if hasattr(ids, "tolist"):  # numpy array or torch tensor: one conversion, no per-item .item()
        if getattr(ids, "ndim", 1) != 1:
            raise ValueError(f"token_texts expects 1-D ids, got shape {tuple(ids.shape)}")
        ids = ids.tolist()
    ids = list(ids)
    if ids and min(ids) < 0:
        raise ValueError(f"token ids must be non-negative, got {min(ids)}")
    return ids


def _backend(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind a tokenizer, or None for a slow (pure Python) one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)  # transformers fast tokenizers
    if backend is not None:
        return backend
    if hasattr(tokenizer, "decode_batch") and hasattr(tokenizer, "id_to_token"):
        return tokenizer  # a raw tokenizers.Tokenizer
    return None


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
    if not _plain_fast_decode(tokenizer) or not set(decode_kwargs) <= {"skip_special_tokens", "clean_up_tokenization_spaces"}:
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


# ----------------------------------------------------------------------------- the id -> piece table


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_OF_CHAR = {ord(c): chr(b) for b, c in _bytes_to_unicode().items()}  # str.translate table
_DROP_MAPPED = {ord(c): None for c in _bytes_to_unicode().values()}  # leaves only unmapped chars
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>\Z")


def _byte_level_piece(token: str) -> bytes:
    # As tokenizers' ByteLevel decoder: map every char back to its byte; a token holding a char
    # outside the table (an added token such as "你好") is taken as its own UTF-8 bytes.
    if token.translate(_DROP_MAPPED):
        return token.encode("utf-8")
    return token.translate(_BYTE_OF_CHAR).encode("latin-1")


def _wordpiece_cleanup(s: str) -> str:
    # tokenizers' decoders::wordpiece::cleanup, applied per token by the WordPiece decoder
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        s = s.replace(a, b)
    return s


def _strip(s: str, content: str, start: int, stop: int) -> str:
    i = 0
    while i < start and i < len(s) and s[i] == content:
        i += 1
    j = len(s)
    while len(s) - j < stop and j > i and s[j - 1] == content:
        j -= 1
    return s[i:j]


class _TokenTable:
    """What the tokenizer's decoder makes of each token id on its own, filled lazily per id seen.

    kind "bytes":  ByteLevel decoder; `piece[i]` is the token's raw bytes, decoded across tokens.
    kind "text":   per-token decoders (Metaspace, Replace, ByteFallback, WordPiece, Strip, none);
                   `piece[i]` is the token's text, or a 1-byte `bytes` for a byte-fallback token.
    kind "generic": anything else (or a slow tokenizer); a token's text is its own `decode([i])`,
                   realigned to the row's decoded text.
    `whole[i]` is the token's text when it stands alone in any row (None where it can split a char).
    Ids the decoder drops (unknown ids) are in `absent`; special-token ids are in `special`.
    """

    def __init__(self, tokenizer: Any, backend: Any):
        self.tokenizer, self.backend = tokenizer, backend
        self.first_cache: dict[int, Any] = {}
        self.generic_cache: dict[int, str] = {}
        self.fuse_strip: tuple[str, int, int] | None = None  # Strip after Fuse: acts on the whole text
        self.stages: list[dict] = []
        self.kind = "generic"
        self.piece: list[Any] = []
        self.whole: list[str | None] = []
        self.unfilled: set[int] = set()  # ids below len(piece) whose entry is not computed yet
        self.absent: set[int] = set()
        if backend is not None:
            decoder = backend.decoder
            self.kind = self._plan(json.loads(decoder.__getstate__()) if decoder is not None else None)
            added = backend.get_added_tokens_decoder()
            self.special_contents = {at.content for at in added.values() if at.special}
            # in decode, tokenizers skips a token whose *content* is special, whatever its id
            self.special = {i for i, at in added.items() if at.special}
            self._grow(backend.get_vocab_size(with_added_tokens=True))
        else:
            self.special = set(getattr(tokenizer, "all_special_ids", []) or [])

    def _grow(self, size: int) -> None:
        old = len(self.piece)
        if size > old:
            self.piece.extend([None] * (size - old))
            self.whole.extend([None] * (size - old))
            self.unfilled.update(range(old, size))

    def ensure(self, ids: list[int]) -> None:
        """Compute the entries of the ids of this row that were never seen (a set lookup per id)."""
        top = max(ids)
        if top >= len(self.piece):
            self._grow(top + 1)
        if self.unfilled:
            missing = self.unfilled.intersection(ids)
            for i in missing:
                token = self.backend.id_to_token(i)
                if token is None:
                    self.absent.add(i)
                elif token in self.special_contents:
                    self.special.add(i)
                self.piece[i] = p = self._piece(i, token, first=False)
                self.whole[i] = self._whole(p)
            self.unfilled -= missing

    # -- which decoder we model
    def _plan(self, spec: dict | None) -> str:
        if spec is None:
            self.stages = [{"type": "_join_with_space"}]
            return "text"
        stages = spec["decoders"] if spec.get("type") == "Sequence" else [spec]
        if any(s.get("type") == "Sequence" for s in stages):
            return "generic"
        if [s["type"] for s in stages] == ["ByteLevel"]:
            return "bytes"
        per_token, fused = [], False
        for s in stages:
            t = s["type"]
            if t == "Fuse":
                fused = True
            elif fused and t == "Strip" and self.fuse_strip is None:
                self.fuse_strip = (s["content"], int(s["start"]), int(s["stop"]))
            elif fused:
                return "generic"  # a stage acting across the fused text that we do not model
            elif t in ("Metaspace", "ByteFallback", "WordPiece", "Strip") or (
                t == "Replace" and "String" in s.get("pattern", {})
            ):
                per_token.append(s)
            else:
                return "generic"
        self.stages = per_token
        return "text"

    # -- one token's piece
    def _piece(self, i: int, token: str | None, first: bool) -> Any:
        if token is None:
            return "" if self.kind != "bytes" else b""
        if self.kind == "bytes":
            return _byte_level_piece(token)
        s = token
        for st in self.stages:
            t = st["type"]
            if t == "Replace":
                s = s.replace(st["pattern"]["String"], st["content"])
            elif t == "Metaspace":
                keep = not (first and st.get("prepend_scheme", "always") != "never")
                s = s.replace(st["replacement"], " " if keep else "")
            elif t == "ByteFallback":
                m = _BYTE_TOKEN.match(s) if len(s) == 6 else None
                if m:
                    return bytes([int(m.group(1), 16)])
            elif t == "WordPiece":
                if not first:
                    s = s[len(st["prefix"]):] if s.startswith(st["prefix"]) else " " + s
                if st.get("cleanup", True):
                    s = _wordpiece_cleanup(s)
            elif t == "Strip":
                s = _strip(s, st["content"], int(st["start"]), int(st["stop"]))
            elif t == "_join_with_space":
                s = s if first else " " + s
        return s

    def generic_piece(self, i: int) -> str:
        """Decoders we do not model: the token's own decode, realigned later to the row's text."""
        p = self.generic_cache.get(i)
        if p is None:
            if self.backend is not None:
                p = self.backend.decode([i], skip_special_tokens=False)
            else:
                p = self.tokenizer.decode([i], skip_special_tokens=False)
            self.generic_cache[i] = p
        return p

    def _whole(self, piece: Any) -> str | None:
        if isinstance(piece, str):
            return piece
        if self.kind == "text":
            return None  # a byte-fallback byte: its text depends on the run it sits in
        try:
            return piece.decode("utf-8")  # valid alone, so no neighbour can complete or break it
        except UnicodeDecodeError:
            return None

    def first_piece(self, i: int) -> Any:
        """The piece of the row's first token (Metaspace, WordPiece and no-decoder treat it apart)."""
        p = self.first_cache.get(i)
        if p is None:
            p = self.first_cache[i] = self._piece(i, self.backend.id_to_token(i), first=True)
        return p


_TABLES: dict[int, tuple[Any, tuple, _TokenTable]] = {}
_TABLES_LOCK = threading.Lock()


def _table_for(tokenizer: Any) -> _TokenTable:
    """The cached table of this tokenizer; rebuilt when tokens are added or the decoder changes."""
    backend = _backend(tokenizer)
    owner = backend if backend is not None else tokenizer
    if backend is not None:
        decoder = backend.decoder
        key = (backend.get_vocab_size(with_added_tokens=True), decoder.__getstate__() if decoder else None)
    else:
        key = (len(tokenizer),)
    with _TABLES_LOCK:
        hit = _TABLES.get(id(owner))
        if hit is not None and hit[0]() is owner and hit[1] == key:
            table = hit[2]
            if table.tokenizer is tokenizer or backend is not None:
                return table
    table = _TokenTable(tokenizer, backend)
    with _TABLES_LOCK:
        for k in [k for k, v in _TABLES.items() if v[0]() is None]:
            del _TABLES[k]  # forget tokenizers that were garbage-collected
        _TABLES[id(owner)] = (weakref.ref(owner), key, table)
    return table


# ----------------------------------------------------------------------------- bytes -> per-token chars

_ERROR_SPANS = threading.local()


def _record_error(exc: UnicodeDecodeError) -> tuple[str, int]:
    _ERROR_SPANS.spans.append((exc.start, exc.end))
    return "\ufffd", exc.end


codecs.register_error("openrlhf_ext.token_texts", _record_error)


def _split_bytes(pieces: list[bytes]) -> list[str] | None:
    """Characters of the concatenated bytes, each given to the token holding its last byte.

    Returns None when the bytes are not valid UTF-8 (the caller decides what invalid means).
    `codecs.utf_8_decode(..., final=False)` is the C routine behind the incremental decoder: it
    decodes what is complete and reports how many bytes it used, leaving a cut-off char for later.
    """
    texts = []
    pending = b""
    try:
        for p in pieces:
            if pending:
                p = pending + p
            text, used = utf_8_decode(p, "strict", False)
            texts.append(text)
            pending = p[used:]
    except UnicodeDecodeError:
        return None
    return None if pending else texts


def _split_bytes_lossy(pieces: list[bytes]) -> list[str]:
    """As `_split_bytes`, with invalid bytes replaced the way the ByteLevel decoder does
    (`String::from_utf8_lossy`: one U+FFFD per maximal invalid subpart, as Python's "replace"),
    each U+FFFD given to the token holding the last byte it replaces. Rare: random or cut-off ids."""
    _ERROR_SPANS.spans = spans = []
    text = b"".join(pieces).decode("utf-8", "openrlhf_ext.token_texts")
    ends = list(accumulate(len(p) for p in pieces))
    out: list[list[str]] = [[] for _ in pieces]
    pos = si = tok = 0
    for ch in text:
        if si < len(spans) and spans[si][0] == pos and ch == "\ufffd":
            end = spans[si][1]
            si += 1
        else:
            c = ord(ch)
            end = pos + (1 if c < 0x80 else 2 if c < 0x800 else 3 if c < 0x10000 else 4)
        while ends[tok] < end:  # the token holding byte end - 1
            tok += 1
        out[tok].append(ch)
        pos = end
    return ["".join(x) for x in out]


# ----------------------------------------------------------------------------- realignment

_WINDOW = 24  # how far (in chars, both sides together) the aligner looks to resynchronise
_ANCHOR = 8  # how many equal chars count as back in sync


def _align(texts: list[str], decoded: str) -> list[str]:
    """Re-cut `decoded` along the token boundaries of `texts`, which are close but not equal.

    Walks both strings; equal chars keep their token. At a difference it looks for the cheapest
    skip on either side after which `_ANCHOR` chars agree again; the decoded chars of the gap go to
    the token of the last model char replaced (the token holding the "last byte"), or, for a pure
    insertion, to the token before (at the very start: the token of the next model char). Linear when differences are local (stripped or cleaned-up
    spaces, a quirk at the first token); always lossless, because it only cuts `decoded`.
    """
    n = len(texts)
    if n == 0:
        return []
    model = "".join(texts)
    owner = [j for j, t in enumerate(texts) for _ in range(len(t))]
    la, ld = len(model), len(decoded)
    cut = [0] * n  # cut[j]: how many decoded chars tokens 0..j own, built from per-char owners
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
    acc = 0
    for j in range(n):
        acc += counts[j]
        cut[j] = acc
    return [decoded[a:b] for a, b in zip([0] + cut[:-1], cut)]


# ----------------------------------------------------------------------------- one row


def _model_texts(table: _TokenTable, ids: list[int]) -> list[str]:
    """The per-token texts the decoder gives, modelled from the table (verified by the caller)."""
    if table.kind == "generic":
        return [table.generic_piece(i) for i in ids]
    whole = table.whole
    texts = [whole[i] for i in ids]
    if None in texts:
        _fill_byte_runs(table, ids, texts)
    if table.kind == "text" and ids:
        first = table.first_piece(ids[0])
        if isinstance(first, str):
            texts[0] = first
        if table.fuse_strip is not None:
            texts = _strip_fused(texts, *table.fuse_strip)
    return texts


def _fill_byte_runs(table: _TokenTable, ids: list[int], texts: list) -> None:
    """Fill the None texts: tokens whose bytes can split a character, in runs of neighbours.

    A token that is valid UTF-8 alone starts and ends on character boundaries, so a split character
    never reaches past a run of None tokens: each run is decoded on its own, in place.
    ByteLevel: invalid bytes become U+FFFD as `String::from_utf8_lossy` does. ByteFallback (kind
    "text", where None marks <0xNN> tokens): a run that is not valid UTF-8 gives U+FFFD per token.
    """
    pieces, n, k = table.piece, len(texts), 0
    while True:
        try:
            a = texts.index(None, k)
        except ValueError:
            return
        b = a + 1
        while b < n and texts[b] is None:
            b += 1
        run = [pieces[i] for i in ids[a:b]]
        out = _split_bytes(run)
        if out is None:
            out = _split_bytes_lossy(run) if table.kind == "bytes" else ["\ufffd"] * (b - a)
        texts[a:b] = out
        k = b


def _strip_fused(texts: list[str], content: str, start: int, stop: int) -> list[str]:
    # Strip after Fuse acts on the whole text: take its chars off the first / last non-empty tokens.
    texts = list(texts)
    j, left = 0, start
    while left and j < len(texts):
        t = texts[j]
        s = _strip(t, content, left, 0)
        left -= len(t) - len(s)
        texts[j] = s
        if s:
            break
        j += 1
    j, left = len(texts) - 1, stop
    while left and j >= 0:
        t = texts[j]
        s = _strip(t, content, 0, left)
        left -= len(t) - len(s)
        texts[j] = s
        if s:
            break
        j -= 1
    return texts


def _row_texts(table: _TokenTable, ids: list[int], decoded: str | None, skip_special: bool) -> list[str]:
    """One row. `decoded` is the reference text, or None to trust the model (exact decoders only)."""
    if not ids:
        return []
    if table.kind != "generic":
        table.ensure(ids)
    dropped = None
    if (table.absent and not table.absent.isdisjoint(ids)) or (
        skip_special and table.special and not table.special.isdisjoint(ids)
    ):
        # Ids the decoder never sees (unknown ids; special tokens when skipped) carry "".
        gone = table.absent | table.special if skip_special else table.absent
        dropped = [i in gone for i in ids]
        kept = [i for i, d in zip(ids, dropped) if not d]
    else:
        kept = ids
    texts = _model_texts(table, kept)
    if decoded is not None and (table.kind == "generic" or "".join(texts) != decoded):
        texts = _align(texts, decoded) if texts else []
    if dropped is not None:
        it = iter(texts)
        texts = ["" if d else next(it) for d in dropped]
        if not kept and decoded:  # nothing kept, yet text came out: give it to the last token
            texts[-1] = decoded
    return texts


# ----------------------------------------------------------------------------- public API


def token_texts(
    tokenizer: Any,
    ids: Sequence[int] | Any,
    decoded: str | None = None,
    decode_kwargs: dict | None = None,
    verify: bool = True,
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
        verify: decode the row and check (default). False skips that decode where the tokenizer's
            decoder is one this module models exactly (ByteLevel, SentencePiece-style
            Metaspace/Replace/ByteFallback/Fuse/Strip, WordPiece) and `decode` is transformers' own
            without cleanup; other tokenizers are still decoded. Ignored when `decoded` is given.

    Returns:
        one string per id. A character split over several tokens belongs to the token holding its
        last byte; tokens that complete no character carry "". No U+FFFD unless `decoded` has one.

    Example:
        >>> texts = token_texts(tokenizer, [15496, 995, 12520, 234, 232])  # "Hello world 😊"
        >>> texts
        ['Hello', ' world', ' ', '', '😊']
        >>> "".join(texts) == tokenizer.decode([15496, 995, 12520, 234, 232])
        True
    """
    rows = [ids]
    return token_texts_batch(tokenizer, rows, None if decoded is None else [decoded], decode_kwargs, verify)[0]


def token_texts_batch(
    tokenizer: Any,
    rows: Iterable[Sequence[int] | Any],
    decoded: Sequence[str] | None = None,
    decode_kwargs: dict | None = None,
    verify: bool = True,
) -> list[list[str]]:
    """`token_texts` over many rows (a list of 1-D ids, or a 2-D numpy array / tensor with no padding
    to strip), sharing one table lookup. `decoded`, when given, holds one decoded text per row.

    Example:
        >>> rows = [[15496, 995], [12520, 234, 232]]
        >>> token_texts_batch(tokenizer, rows)
        [['Hello', ' world'], [' ', '', '😊']]
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
    table = _table_for(tokenizer)
    if decoded is None:
        if verify or table.kind == "generic" or not _decode_is_modelled(tokenizer, kwargs):
            decoded = _decode_rows(tokenizer, id_rows, kwargs)
        else:
            decoded = [None] * len(id_rows)
    skip = bool(kwargs.get("skip_special_tokens", False))
    return [_row_texts(table, r, d, skip) for r, d in zip(id_rows, decoded)]
