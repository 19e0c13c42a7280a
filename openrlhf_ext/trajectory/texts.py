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
    """The reference texts: exactly the decode call a saver makes for `generated_text`."""
    if hasattr(tokenizer, "backend_tokenizer") or not hasattr(tokenizer, "decode_batch"):
        return [tokenizer.decode(row, **decode_kwargs) for row in rows]
    # raw tokenizers.Tokenizer: its decode defaults to skip_special_tokens=True, ours to False
    skip = bool(decode_kwargs.get("skip_special_tokens", False))
    return tokenizer.decode_batch(rows, skip_special_tokens=skip)


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
    """What the tokenizer's decoder makes of each token id on its own, built once per tokenizer.

    kind "bytes":  ByteLevel decoder; `piece[i]` is the token's raw bytes, decoded across tokens.
    kind "text":   per-token decoders (Metaspace, Replace, ByteFallback, WordPiece, Strip, none);
                   `piece[i]` is the token's text, or a 1-byte `bytes` for a byte-fallback token.
    kind "generic": anything else; `piece[i]` is `decode([i])`, then realigned to the row's text.
    `whole[i]` is the token's text when it stands alone in any row (None where it can split a char).
    """

    def __init__(self, tokenizer: Any, backend: Any):
        self.tokenizer, self.backend = tokenizer, backend
        self.first_cache: dict[int, str] = {}
        self.fuse_strip: tuple[str, int, int] | None = None  # Strip after Fuse: acts on the whole text
        self.stages: list[dict] = []
        self.kind = "generic"
        if backend is not None:
            decoder = backend.decoder
            spec = json.loads(decoder.__getstate__()) if decoder is not None else None
            self.kind = self._plan(spec)
            vocab = backend.get_vocab(with_added_tokens=True)
            size = max(vocab.values(), default=-1) + 1
            tokens: list[str | None] = [None] * size
            for tok, i in vocab.items():
                tokens[i] = tok
            added = backend.get_added_tokens_decoder()
            for i, at in added.items():  # the added vocabulary wins in decode, as in tokenizers
                if i < size:
                    tokens[i] = at.content
            special_contents = {at.content for at in added.values() if at.special}
            self.special = {i for i, t in enumerate(tokens) if t is not None and t in special_contents}
        else:  # slow tokenizer: ids it knows are those below its length
            size = len(tokenizer)
            tokens = [None] * size
            self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.tokens = tokens
        self.absent = {i for i, t in enumerate(tokens) if t is None} if backend is not None else set()
        self.generic_cache: dict[int, str] = {}
        if self.kind == "generic":  # decoded lazily, one call per id ever seen
            self.piece, self.whole = [""] * size, [None] * size
        else:
            self.piece = [self._piece(i, t, first=False) for i, t in enumerate(tokens)]
            self.whole = [self._whole(p) for p in self.piece]

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
            p = self.first_cache[i] = self._piece(i, self.tokens[i], first=True)
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
    """
    decode = codecs.getincrementaldecoder("utf-8")("strict").decode
    try:
        texts = [decode(p) for p in pieces]  # a char is emitted by the call that completes it
        decode(b"", True)  # raises on a character cut off at the end
    except UnicodeDecodeError:
        return None
    return texts


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


def _split_byte_runs(pieces: list[Any]) -> list[str]:
    """ByteFallback semantics: a run of consecutive byte tokens decodes as one UTF-8 string,
    or, when the run is not valid UTF-8, every byte token of it becomes one U+FFFD."""
    out: list[str] = []
    run: list[bytes] = []
    for p in pieces + [""]:  # the sentinel "" flushes the last run
        if isinstance(p, bytes):
            run.append(p)
            continue
        if run:
            texts = _split_bytes(run)
            out.extend(texts if texts is not None else ["\ufffd"] * len(run))
            run = []
        out.append(p)
    out.pop()
    return out


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
    if None in texts:  # some token's bytes can split a character: cut the row's bytes by chars
        pieces = table.piece
        if table.kind == "bytes":
            row = [pieces[i] for i in ids]
            texts = _split_bytes(row) or _split_bytes_lossy(row)
        else:
            texts = _split_byte_runs([pieces[i] for i in ids])
    if table.kind == "text" and ids:
        first = table.first_piece(ids[0])
        if isinstance(first, str):
            texts[0] = first
        if table.fuse_strip is not None:
            texts = _strip_fused(texts, *table.fuse_strip)
    return texts


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


def _row_texts(table: _TokenTable, ids: list[int], decoded: str, skip_special: bool) -> list[str]:
    if not ids:
        return []
    size = len(table.piece)
    dropped = None
    if max(ids) >= size or (table.absent and not table.absent.isdisjoint(ids)) or (
        skip_special and table.special and not table.special.isdisjoint(ids)
    ):
        # Ids the decoder never sees (unknown ids; special tokens when skipped) carry "".
        gone = table.absent | (table.special if skip_special else set())
        dropped = [i >= size or i in gone for i in ids]
        kept = [i for i, d in zip(ids, dropped) if not d]
    else:
        kept = ids
    texts = _model_texts(table, kept)
    if table.kind == "generic" or "".join(texts) != decoded:
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
    return token_texts_batch(tokenizer, [ids], None if decoded is None else [decoded], decode_kwargs)[0]


def token_texts_batch(
    tokenizer: Any,
    rows: Iterable[Sequence[int] | Any],
    decoded: Sequence[str] | None = None,
    decode_kwargs: dict | None = None,
) -> list[list[str]]:
    """`token_texts` over many rows (a list of 1-D ids, or a 2-D numpy array / tensor with no padding
    to strip). One table lookup per tokenizer; raw `tokenizers.Tokenizer`s decode the batch in
    parallel. `decoded`, when given, holds one decoded text per row.

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
    if decoded is None:
        decoded = _decode_rows(tokenizer, id_rows, kwargs) if id_rows else []
    elif len(decoded) != len(id_rows):
        raise ValueError(f"got {len(decoded)} decoded texts for {len(id_rows)} rows")
    if not id_rows:
        return []
    table = _table_for(tokenizer)
    skip = bool(kwargs.get("skip_special_tokens", False))
    return [_row_texts(table, r, d, skip) for r, d in zip(id_rows, decoded)]
