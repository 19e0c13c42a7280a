"""Alternatives: the most probable tokens of the distribution a token was sampled from, as FORMAT.md
writes them on a token (``[{"id", "text", "logprob"}, ...]``, most probable first, at most K), and
the text of a token read on its own, which they and the manifest's fork words (``fork_words``) show.

A token's own text comes from the tokenizer's token table (texts_table.py), once per token id and
cached with the table, so a step's alternatives cost one lookup per distinct id, not a decode per
token. It is the text the token adds in the middle of a text (a SentencePiece token keeps its
leading space, as the same token does inside a response); bytes that do not form whole UTF-8
characters (a byte-level token holding the first bytes of a CJK character or an emoji) are written
``<0xNN>``, one per byte.

Example (the toy byte-level tokenizer: an id is a byte):
    >>> import numpy as np
    >>> from openrlhf_ext.trajectory.toy import toy_tokenizer
    >>> token_alone_texts(toy_tokenizer(), [ord("a"), 0xE4])
    ['a', '<0xE4>']
    >>> ids = np.array([[ord("b"), ord("a")]]); logprobs = np.array([[-1.5, -0.25]])
    >>> alternative_lists(toy_tokenizer(), ids, logprobs, k=5)
    [[{'id': 97, 'text': 'a', 'logprob': -0.25}, {'id': 98, 'text': 'b', 'logprob': -1.5}]]
"""
from __future__ import annotations

import codecs

import numpy as np

from .manifest_entry import MAX_FORK_WORDS, count_fork_words
from .texts_table import table_for, unknown_token_text

ALTERNATIVES_FOR = ("high", "all")  # --alternatives_for: on high-entropy tokens only, or on every response token


def _hex_bytes(error: UnicodeError):
    # A codecs error handler: each byte of an incomplete or invalid UTF-8 sequence as <0xNN>.
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "".join(f"<0x{b:02X}>" for b in error.object[error.start : error.end]), error.end


codecs.register_error("openrlhf_ext.hex_bytes", _hex_bytes)


def bytes_text(data: bytes) -> str:
    """``data`` decoded as UTF-8, each byte that is not part of a whole character as ``<0xNN>``.

    Example:
        >>> bytes_text(" 你".encode()[:3]), bytes_text("🙂".encode())
        (' <0xE4><0xBD>', '🙂')
    """
    return data.decode("utf-8", "openrlhf_ext.hex_bytes")


def _alone_text(table, i: int) -> str:
    if table.size is not None and i >= table.size:
        return unknown_token_text(i)
    if table.backend is None or table.kind == "generic":
        return table.generic_piece(i)  # decoders we do not model: the token's own decode
    if table.piece[i] is None:
        table.fill(i)
    piece = table.piece[i]
    return piece if isinstance(piece, str) else bytes_text(piece)


def token_alone_texts(tokenizer, ids) -> list[str]:
    """The text of each token id read on its own (see the module's docstring), from the
    tokenizer's cached token table. ``ids``: python ints (best distinct: a step's ids through
    ``numpy.unique``)."""
    table = table_for(tokenizer)
    return [_alone_text(table, i) for i in ids]


def alternative_lists(tokenizer, ids: np.ndarray, logprobs: np.ndarray, k: int) -> list[list[dict]]:
    """FORMAT.md's ``alternatives`` of N tokens: for each row, at most ``k`` of its candidates,
    most probable first, as ``{"id", "text", "logprob"}``.

    ids: (N, K') token ids of the candidates (negative: none); logprobs: (N, K') their log-probs
    (not finite: none). The texts of all rows are looked up once per distinct id.
    """
    if len(ids) == 0 or k <= 0:
        return [[] for _ in range(len(ids))]
    ids = np.asarray(ids).reshape(len(ids), -1)  # (N, K')
    logprobs = np.asarray(logprobs, dtype=np.float64).reshape(ids.shape)  # (N, K')
    order = np.argsort(-np.nan_to_num(logprobs, nan=-np.inf), axis=1, kind="stable")[:, :k]  # most probable first
    ids = np.take_along_axis(ids, order, 1).astype(np.int64)  # (N, k)
    logprobs = np.take_along_axis(logprobs, order, 1)  # (N, k)
    keep = (ids >= 0) & np.isfinite(logprobs)  # (N, k)
    distinct = np.unique(ids[keep]).tolist()
    texts = dict(zip(distinct, token_alone_texts(tokenizer, distinct)))
    return [[{"id": i, "text": texts[i], "logprob": lp} for i, lp, kept in zip(row_ids, row_lps, row_keep) if kept]
            for row_ids, row_lps, row_keep in zip(ids.tolist(), logprobs.tolist(), keep.tolist())]


def fork_words(tokenizer, marked_ids, top: int = MAX_FORK_WORDS) -> list[list]:
    """The manifest's ``fork_words``: ``[[word, count], ...]`` of the high-entropy tokens
    ``marked_ids`` (the ids of every marked token of the step, any shape), most frequent first,
    at most ``top``; a word is a token's own text through ``manifest_entry.fork_word``.

    Example:
        >>> from openrlhf_ext.trajectory.toy import toy_tokenizer
        >>> fork_words(toy_tokenizer(), np.array([ord("a"), ord("b"), ord("a"), ord(" ")]))
        [['a', 2], ["' '", 1], ['b', 1]]
    """
    distinct, counts = np.unique(np.asarray(marked_ids, dtype=np.int64).ravel(), return_counts=True)
    keep = distinct >= 0
    distinct, counts = distinct[keep].tolist(), counts[keep].tolist()
    return count_fork_words(token_alone_texts(tokenizer, distinct), counts, top)
