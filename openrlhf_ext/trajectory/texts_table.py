"""What a tokenizer's decoder makes of each token: the table behind `token_texts` (texts.py).

For the decoders that real LLM tokenizers use, the decoded text of a row can be predicted from
per-token pieces, computed once per token id:
- ByteLevel (GPT-2, Qwen, Llama-3, DeepSeek): the token's raw bytes, through GPT-2's
  bytes_to_unicode table; bytes of a row are then cut into UTF-8 characters, each going to the
  token holding its last byte (`codecs.utf_8_decode`, the C routine behind incremental decoding).
- SentencePiece-style (Metaspace, or Replace("▁", " ") + ByteFallback + Fuse + Strip): the token's
  text with ▁ as a space, or one byte for a byte-fallback token such as <0xE4>; a run of byte tokens
  decodes as one UTF-8 string, or gives one U+FFFD per token when invalid (as ByteFallback does).
- WordPiece ("##" continuations, per-token cleanup) and no decoder (tokens joined by spaces).
The first token of a row is treated apart where the decoder does (Metaspace drops its ▁, WordPiece
keeps its "##"), and a Strip after Fuse acts on the whole text. Anything else is "generic": the
caller realigns per-token decodes to the decoded text. Every rule here follows the tokenizers
(Rust) source of the decoder it models; the tests check them against the real decoders.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import threading
import weakref
from codecs import utf_8_decode
from itertools import accumulate
from typing import Any


logger = logging.getLogger("openrlhf_ext.trajectory.texts")


def unknown_token_text(i: int) -> str:
    """The text of a token id at or past the end of the tokenizer's vocabulary (a model's padded
    vocabulary, a corrupt id): no decoder has a text for it (``decode`` drops it), so it carries
    this placeholder instead of a silent "". Only there do the texts not join to ``decode``.

    Example:
        >>> unknown_token_text(100000000)
        '<unk:100000000>'
    """
    return f"<unk:{i}>"


def _backend(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind a tokenizer, or None for a slow (pure Python) one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)  # transformers fast tokenizers
    if backend is not None:
        return backend
    if hasattr(tokenizer, "decode_batch") and hasattr(tokenizer, "id_to_token"):
        return tokenizer  # a raw tokenizers.Tokenizer
    return None


# ----------------------------------------------------------------------------- the id -> piece table


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_OF_CHAR = {ord(c): chr(b) for b, c in bytes_to_unicode().items()}  # str.translate table
_DROP_MAPPED = {ord(c): None for c in bytes_to_unicode().values()}  # leaves only unmapped chars
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


class TokenTable:
    """What the tokenizer's decoder makes of each token id on its own, filled lazily per id seen.

    kind "bytes":  ByteLevel decoder; `piece[i]` is the token's raw bytes, decoded across tokens.
    kind "text":   per-token decoders (Metaspace, Replace, ByteFallback, WordPiece, Strip, none);
                   `piece[i]` is the token's text, or a 1-byte `bytes` for a byte-fallback token.
    kind "generic": anything else (or a slow tokenizer); a token's text is its own `decode([i])`,
                   realigned to the row's decoded text.
    `piece[i]` is None for an id not seen yet; `lookup` fills it on first sight (no full-vocab pass).
    `whole[i]` is the token's text when it stands alone in any row (None where it can split a char).
    Ids the decoder drops (unknown ids) are in `absent`; special-token ids are in `special`.
    `size`: ids from `size` up have no entry and never get one (they carry `unknown_token_text`),
    so one id of 10^8 costs nothing; None when the tokenizer does not say its size.
    """

    def __init__(self, tokenizer: Any, backend: Any):
        # weak references: the cache below must not keep a tokenizer alive
        self._tokenizer_ref = _weak(tokenizer)
        self._backend_ref = _weak(backend) if backend is not None else None
        self.first_cache: dict[int, Any] = {}
        self.generic_cache: dict[int, str] = {}
        self.fuse_strip: tuple[str, int, int] | None = None  # Strip after Fuse: acts on the whole text
        self.stages: list[dict] = []
        self.kind = "generic"
        self.piece: list[Any] = []
        self.whole: list[str | None] = []
        self.absent: set[int] = set()
        self.calibrated: dict[bool, bool] = {}  # skip_special_tokens -> model matched decode
        if backend is not None:
            decoder = backend.decoder
            self.kind = self._plan(json.loads(decoder.__getstate__()) if decoder is not None else None)
            added = backend.get_added_tokens_decoder()
            self.special_contents = {at.content for at in added.values() if at.special}
            self.special = {i for i, at in added.items() if at.special}
            # the largest id + 1, not the count: a vocabulary may have holes, added tokens ids of their own
            self.size: int | None = max(backend.get_vocab(with_added_tokens=True).values(), default=-1) + 1
            self._grow(self.size)
        else:
            self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
            try:
                self.size = max(tokenizer.get_vocab().values(), default=-1) + 1
            except (AttributeError, TypeError, ValueError):
                self.size = None
        self.warned_unknown = False

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer_ref()

    @property
    def backend(self) -> Any:
        return self._backend_ref() if self._backend_ref is not None else None

    def _grow(self, size: int) -> None:
        if size > len(self.piece):  # None in `piece`: an id never seen yet
            self.piece.extend([None] * (size - len(self.piece)))
            self.whole.extend([None] * (size - len(self.whole)))

    def fill(self, i: int) -> None:
        """Compute the entry of an id seen for the first time."""
        token = self.backend.id_to_token(i)
        if token is None:
            self.absent.add(i)  # decode drops ids it does not know
        elif token in self.special_contents:
            self.special.add(i)  # decode skips a token whose *content* is special, whatever its id
        self.piece[i] = p = self._piece(i, token, first=False)
        self.whole[i] = self._whole(p)

    def lookup(self, ids: list[int]) -> list[str | None]:
        """`whole` of each id (None where a token can split a character), filling unseen ids."""
        whole = self.whole
        texts = [whole[i] for i in ids]  # every id is below `size` here (see texts._row_texts)
        if None in texts:
            piece, k = self.piece, 0
            while True:
                try:
                    k = texts.index(None, k)
                except ValueError:
                    break
                i = ids[k]
                if piece[i] is None:
                    self.fill(i)
                texts[k] = whole[i]  # an id repeated in the row was looked up before its fill
                k += 1
        return texts

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
            return b""  # an empty run member: dropped by decode, so it must not break a byte run
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

    def note_unknown(self, ids: list[int]) -> None:
        """Log, once per tokenizer, that ids past its vocabulary were given placeholder texts."""
        if not self.warned_unknown:
            self.warned_unknown = True
            first = next(i for i in ids if i >= self.size)
            logger.warning("token id %d is outside the tokenizer's vocabulary of %d ids: its text is %r (decode "
                           "drops it); is this the model's tokenizer? Later such ids are not reported again.",
                           first, self.size, unknown_token_text(first))

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


_TABLES: dict[int, tuple[Any, tuple, TokenTable]] = {}
_TABLES_LOCK = threading.Lock()


def table_for(tokenizer: Any) -> TokenTable:
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
            return hit[2]
    table = TokenTable(owner if backend is None else tokenizer, backend)
    with _TABLES_LOCK:
        for k in [k for k, v in _TABLES.items() if v[0]() is None]:
            del _TABLES[k]  # forget tokenizers that were garbage-collected
        _TABLES[id(owner)] = (_weak(owner), key, table)
    return table


def _weak(obj: Any):
    """A weak reference to ``obj``, or a strong one where its type allows none (the Rust
    ``tokenizers.Tokenizer`` before tokenizers 0.23, which transformers < 5.11 pins)."""
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


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

# ----------------------------------------------------------------------------- one row


def model_texts(table: TokenTable, ids: list[int], texts: list[str | None]) -> list[str]:
    """The per-token texts the decoder gives, modelled from the table (verified by the caller).
    `texts` is `table.lookup(ids)`; it is completed in place."""
    if None in texts:
        _fill_byte_runs(table, ids, texts)
    if table.kind == "text" and ids:
        first = table.first_piece(ids[0])
        if isinstance(first, str):
            texts[0] = first
        if table.fuse_strip is not None:
            texts = _strip_fused(texts, *table.fuse_strip)
    return texts


def _fill_byte_runs(table: TokenTable, ids: list[int], texts: list) -> None:
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
            out = _split_bytes_lossy(run) if table.kind == "bytes" else ["\ufffd" if p else "" for p in run]
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
