"""token_texts: per-token texts that join to the decoded text (FORMAT.md "Token texts").

Every tokenizer here is built in the test from a few lines of text: nothing is downloaded.
The oracle for "each character belongs to the token that holds its last byte" is the slow,
obviously right method: decode every growing prefix of the ids and see how much of the full
decoded text it already holds.
"""

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from openrlhf_ext.trajectory.texts import _align, token_texts, token_texts_batch
from openrlhf_ext.trajectory.texts_table import table_for

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Let x = 3. Then x^2 + 2x + 1 = 16, so (x + 1)^2 = 16.",
    "我们今天学习数学。答案是四十二。",
    "The answer is \\boxed{42} 😀 and we are done 🎉.",
    "Emoji: 😀😀 🚀 ❤️ 👍🏽, and 中文 mixed with English words.",
    "def f(n):\n    return n * (n + 1) // 2\n",
] * 10
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _byte_level_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=SPECIALS,
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_tokens(["你好"])  # an added, non-special token outside the byte alphabet
    return tok


def _sentencepiece(decoder_style: str) -> Tokenizer:
    """Unigram with byte fallback, as SentencePiece (Llama-2/Mistral) tokenizers are converted."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.UnigramTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens, unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    vocab = [tuple(x) for x in json.loads(tok.to_str())["model"]["vocab"]]
    # drop the CJK/emoji chars the trainer kept whole, so that they must go through byte fallback
    vocab = [(t, s) for t, s in vocab if not any(ord(c) > 0x2FFF and c != "▁" for c in t)]
    sp = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    if decoder_style == "llama":
        sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        sp.pre_tokenizer = None
        sp.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    else:
        sp.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    sp.add_special_tokens(["<s>", "</s>"])
    return sp


def _wordpiece() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        CORPUS,
        trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]", "[CLS]", "[SEP]"], show_progress=False),
    )
    return tok


RAW = {
    "byte_bpe": _byte_level_bpe(),
    "sp_llama": _sentencepiece("llama"),
    "sp_metaspace": _sentencepiece("metaspace"),
    "wordpiece": _wordpiece(),
}
HF = {name: PreTrainedTokenizerFast(tokenizer_object=tok) for name, tok in RAW.items()}
BPE = HF["byte_bpe"]


def _model_classes() -> dict:
    """transformers' own Qwen2 / Llama / Gemma tokenizer classes, built from vocabs trained here:
    their decoders, pre-tokenizers and special tokens are configured exactly as for the real models."""
    from transformers import GemmaTokenizer, LlamaTokenizer, Qwen2Tokenizer

    bl = json.loads(RAW["byte_bpe"].to_str())["model"]
    qwen = Qwen2Tokenizer(vocab=bl["vocab"], merges=[tuple(m) for m in bl["merges"]])
    sp = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    sp.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens, show_progress=False),
    )
    m = json.loads(sp.to_str())["model"]
    # CJK/emoji only through byte fallback, as for rare characters in a real SentencePiece vocab
    vocab = {t: i for t, i in m["vocab"].items() if not any(ord(c) > 0x2FFF and c != "▁" for c in t)}
    merges = [tuple(mg) for mg in m["merges"] if all(x in vocab for x in mg) and "".join(mg) in vocab]
    llama = LlamaTokenizer(vocab=vocab, merges=merges)
    gemma_vocab = dict(vocab, **{t: len(vocab) + k for k, t in enumerate(["<pad>", "<eos>", "<bos>", "<mask>"])})
    gemma = GemmaTokenizer(vocab=gemma_vocab, merges=merges)
    return {"qwen2": qwen, "llama": llama, "gemma": gemma}


MODEL_CLASSES = _model_classes()


def prefix_oracle(tokenizer, ids, **kw):
    """Quadratic reference: token j owns the chars that decode(ids[:j+1]) adds to the common prefix
    with the full text. Right when the full text has no U+FFFD (a cut-off char decodes to U+FFFD,
    which then differs from the full text until the token completing it arrives)."""
    full = tokenizer.decode(ids, **kw)
    texts, done = [], 0
    for j in range(len(ids)):
        prefix = tokenizer.decode(ids[: j + 1], **kw)
        n = 0
        while n < min(len(prefix), len(full)) and prefix[n] == full[n]:
            n += 1
        if j == len(ids) - 1:
            n = len(full)
        n = max(n, done)
        texts.append(full[done:n])
        done = n
    return texts


def _ids_by_map(tokenizer, chars: str) -> list[int]:
    """The ids of byte-alphabet tokens spelling `chars` one byte per token (a split at every byte)."""
    # GPT-2's bytes_to_unicode, written out here so the test does not share the module's table
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, map(chr, cs)))
    return [tokenizer.convert_tokens_to_ids(table[b]) for b in chars.encode("utf-8")]


# ----------------------------------------------------------------------------- specific behaviour


def test_emoji_split_over_tokens_gives_space_then_the_emoji():
    ids = _ids_by_map(BPE, "a 😀")  # a, space, F0, 9F, 98, 80: the emoji cut into four byte tokens
    assert token_texts(BPE, ids) == ["a", " ", "", "", "", "😀"]
    # the usual per-token decode turns every piece into U+FFFD
    assert "\ufffd" in "".join(BPE.decode([i]) for i in ids)


def test_merged_space_and_emoji_head_carries_the_space():
    head = BPE.convert_tokens_to_ids("ĠðŁ")  # a learned merge: space + the first two bytes of 🎉
    assert head != BPE.unk_token_id and BPE.convert_ids_to_tokens(head) == "ĠðŁ"
    ids = BPE.encode("done") + [head] + _ids_by_map(BPE, "🎉")[2:] + BPE.encode(".")
    texts = token_texts(BPE, ids)
    assert texts[-4:] == [" ", "", "🎉", "."]
    assert "".join(texts) == BPE.decode(ids) == "done 🎉."


def test_cjk_split_goes_whole_to_the_completing_token():
    ids = _ids_by_map(BPE, "学x")
    assert token_texts(BPE, ids) == ["", "", "学", "x"]


def test_unknown_id_inside_a_split_char_is_a_placeholder_and_decode_drops_it():
    emoji = _ids_by_map(BPE, "😀")
    beyond = len(BPE) + 10  # e.g. a padded model vocab sampled past the tokenizer's
    ids = emoji[:2] + [beyond] + emoji[2:]
    assert BPE.decode(ids) == "😀"
    for verify in (True, False):
        assert token_texts(BPE, ids, verify=verify) == ["", "", f"<unk:{beyond}>", "", "😀"]


def test_an_id_far_past_the_vocabulary_costs_no_memory_and_is_said(caplog):
    """One id of 10^8 grew the table to 10^8 entries (2.3 GB in save_step) and saved ""."""
    tok = Tokenizer.from_str(RAW["byte_bpe"].to_str())  # a tokenizer of its own: said once per tokenizer
    ids = tok.encode("hi").ids + [10**8]
    with caplog.at_level("WARNING"):
        texts = token_texts(tok, ids)
    assert texts[-1] == "<unk:100000000>" and "".join(texts[:-1]) == tok.decode(ids) == "hi"
    assert len(table_for(tok).piece) <= tok.get_vocab_size() < 10**6
    assert "token id 100000000 is outside the tokenizer's vocabulary" in caplog.text


def _known(texts, ids, size):
    """The texts of the ids the tokenizer knows (the others carry their placeholder, checked here)."""
    assert all(t == f"<unk:{i}>" for t, i in zip(texts, ids) if i >= size)
    return ["" if i >= size else t for t, i in zip(texts, ids)]


def test_special_tokens_kept_or_skipped_like_decode():
    ids = BPE.encode("<|im_start|>hi 你好<|im_end|>")
    texts = token_texts(BPE, ids)
    assert texts[0] == "<|im_start|>" and texts[-1] == "<|im_end|>" and "你好" in texts
    assert "".join(texts) == BPE.decode(ids)
    skipped = token_texts(BPE, ids, decode_kwargs={"skip_special_tokens": True})
    assert skipped[0] == "" and skipped[-1] == "" and "".join(skipped) == "hi 你好"
    # raw tokenizers.Tokenizer: the same texts, with our default skip_special_tokens=False
    assert token_texts(RAW["byte_bpe"], ids) == texts


@pytest.mark.parametrize("empty", [[], (), np.array([], dtype=np.int64), torch.tensor([], dtype=torch.long)])
def test_empty_ids(empty):
    assert token_texts(BPE, empty) == []


def test_numpy_torch_tuple_and_list_agree():
    ids = BPE.encode("Then x^2 + 1 = 16 😀 我们")
    want = token_texts(BPE, ids)
    assert token_texts(BPE, tuple(ids)) == want
    assert token_texts(BPE, np.array(ids, dtype=np.int32)) == want
    assert token_texts(BPE, torch.tensor(ids)) == want
    assert token_texts(BPE, list(np.array(ids))) == want  # a list of numpy scalars
    assert token_texts_batch(BPE, torch.tensor([ids, ids])) == [want, want]
    with pytest.raises(ValueError):
        token_texts(BPE, torch.tensor([ids]))


def test_no_replacement_char_unless_decoded_has_it():
    whole = _ids_by_map(BPE, " 🚀 ok")
    texts = token_texts(BPE, whole)
    assert "\ufffd" not in "".join(texts) and "".join(texts) == " 🚀 ok"
    cut = whole[:3]  # space + half of the rocket: decode itself gives U+FFFD, and so may we
    texts = token_texts(BPE, cut)
    assert "".join(texts) == BPE.decode(cut) and BPE.decode(cut).endswith("\ufffd")
    assert texts[0] == " " and texts[-1] == "\ufffd"  # U+FFFD goes to the token of its last byte


def test_sentencepiece_byte_fallback_and_leading_space():
    for name in ("sp_llama", "sp_metaspace"):
        tok = HF[name]
        ids = tok.encode("Hello 🦄 world", add_special_tokens=False)
        assert "<0xF0>" in tok.convert_ids_to_tokens(ids), name  # the unicorn goes byte by byte
        texts = token_texts(tok, ids)
        assert "".join(texts) == tok.decode(ids) == "Hello 🦄 world", name
        assert texts == prefix_oracle(tok, ids), name
        assert token_texts(tok, ids, verify=False) == texts, name  # the model alone gets it right
        assert "🦄" in texts and texts[0] == "Hello"[: len(texts[0])], name


def test_sentencepiece_invalid_byte_run_is_one_replacement_per_byte_token():
    tok = HF["sp_llama"]
    a, b = tok.encode("a", add_special_tokens=False), tok.encode("b", add_special_tokens=False)
    ids = a + tok.convert_tokens_to_ids(["<0xF0>", "<0x9F>"]) + b  # half an emoji, then text
    texts = token_texts(tok, ids)
    assert "".join(texts) == tok.decode(ids)
    assert texts[len(a) : len(a) + 2] == ["\ufffd", "\ufffd"]


def test_wordpiece_with_cleanup_spaces():
    tok = HF["wordpiece"]
    ids = tok.encode("we are done. the answer is 42 !", add_special_tokens=True)
    for kw in ({}, {"clean_up_tokenization_spaces": True}, {"skip_special_tokens": True}):
        texts = token_texts(tok, ids, decode_kwargs=kw)
        assert "".join(texts) == tok.decode(ids, **kw), kw
        assert len(texts) == len(ids)


def test_hf_cleanup_of_spaces_is_realigned():
    # HF's clean_up_tokenization_spaces rewrites the whole decoded text (" ." -> "."), which no
    # per-token model predicts: the texts must be re-cut from the text decode really returned.
    tok = HF["sp_llama"]
    ids = tok.encode("x = 3 . we are done ! 😀 ok", add_special_tokens=False)
    kw = {"clean_up_tokenization_spaces": True}
    cleaned = tok.decode(ids, **kw)
    assert cleaned != tok.decode(ids)  # the cleanup did change something
    texts = token_texts(tok, ids, decode_kwargs=kw)
    assert "".join(texts) == cleaned and len(texts) == len(ids)
    assert token_texts(tok, ids, decode_kwargs=kw, verify=False) == texts  # cleanup: always decoded
    assert "😀" in texts  # the byte-fallback emoji still goes whole to the completing token


def test_unmodelled_decoder_is_still_lossless():
    tok = Tokenizer.from_str(RAW["byte_bpe"].to_str())
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace("e", "E")])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    ids = hf.encode("the eel ate 😀 here")
    for verify in (True, False):  # an unmodelled decoder is decoded and realigned even unverified
        texts = token_texts(hf, ids, verify=verify)
        assert "".join(texts) == hf.decode(ids) == "thE EEl atE 😀 hErE"
        assert "\ufffd" not in "".join(texts)


def test_decode_override_is_always_decoded():
    class ShoutyTokenizer(PreTrainedTokenizerFast):
        def decode(self, token_ids, **kwargs):
            return super().decode(token_ids, **kwargs).upper()

    tok = ShoutyTokenizer(tokenizer_object=Tokenizer.from_str(RAW["byte_bpe"].to_str()))
    ids = tok.encode("we are done 😀")
    for verify in ("auto", False):
        texts = token_texts(tok, ids, verify=verify)
        assert "".join(texts) == "WE ARE DONE 😀" and len(texts) == len(ids)


def test_auto_mode_falls_back_to_verifying_when_the_model_is_wrong():
    # a table that mispredicts decode (as an unforeseen decoder variant would) must fail the
    # calibration, so that the default mode decodes every row instead of trusting it
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(RAW["byte_bpe"].to_str()))
    ids = tok.encode("a cat sat on a mat")
    table = table_for(tok)
    table.lookup(list(range(len(tok))))  # fill every entry, then break the letters
    for i in range(len(tok)):
        if table.whole[i] and table.whole[i].isalpha():
            table.whole[i] = table.whole[i].upper()
    assert "".join(token_texts(tok, ids, verify=False)) != tok.decode(ids)  # the model is wrong
    assert "".join(token_texts(tok, ids)) == tok.decode(ids) == "a cat sat on a mat"


def test_given_decoded_text_is_the_reference():
    ids = BPE.encode("a b c")
    texts = token_texts(BPE, ids, decoded="a  b c")  # e.g. a saver that post-processed the text
    assert "".join(texts) == "a  b c" and len(texts) == len(ids)


def test_align_gives_replaced_chars_to_the_last_replaced_token():
    assert _align(["a", "\ufffd", "\ufffd", "b"], "a😀b") == ["a", "", "😀", "b"]
    assert _align([" x", " .", " y"], " x. y") == [" x", ".", " y"]
    assert _align(["", ""], "zz") == ["", "zz"]
    # spaces only in the decoded text (a decoder adding word separators) go to the next word
    assert _align(["Let", "x", "="], "Let x =") == ["Let", " x", " ="]


# ----------------------------------------------------------------------------- properties

PIECES = [*"abcxyz 0123456789+-=^().\n", *"我们学数答案中文", "😀", "🎉", "🚀", "👍🏽", "é", "∑", " the"]
TEXT = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(HF)), text=TEXT, data=st.data())
def test_property_encoded_text_matches_prefix_oracle(name, text, data):
    tok = HF[name]
    ids = tok.encode(text, add_special_tokens=False)
    # cut anywhere, also inside an emoji or a CJK char
    lo = data.draw(st.integers(0, len(ids)))
    hi = data.draw(st.integers(lo, len(ids)))
    ids = ids[lo:hi]
    texts = token_texts(tok, ids, verify=True)
    full = tok.decode(ids)
    assert "".join(texts) == full
    assert len(texts) == len(ids)
    assert token_texts(tok, ids) == token_texts(tok, ids, verify=False) == texts
    if "\ufffd" not in full:
        assert texts == prefix_oracle(tok, ids)
        assert not any("\ufffd" in t for t in texts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(RAW)), raw=st.booleans(), skip=st.booleans(), data=st.data())
def test_property_random_ids_are_lossless(name, raw, skip, data):
    tok = RAW[name] if raw else HF[name]
    size = RAW[name].get_vocab_size(with_added_tokens=True)
    # a few ids past the vocabulary too: models pad their vocab, and decode drops unknown ids
    ids = data.draw(st.lists(st.integers(0, size + 2), max_size=30))
    kw = {"skip_special_tokens": skip}
    texts = token_texts(tok, ids, decode_kwargs=kw, verify=True)
    assert token_texts(tok, ids, decode_kwargs=kw, verify=False) == texts
    assert token_texts(tok, ids, decode_kwargs=kw) == texts
    texts = _known(texts, ids, max(RAW[name].get_vocab(with_added_tokens=True).values()) + 1)
    full = RAW[name].decode(ids, skip_special_tokens=skip)
    assert "".join(texts) == full
    assert len(texts) == len(ids)
    if "\ufffd" not in full:
        assert not any("\ufffd" in t for t in texts)
        assert texts == prefix_oracle(tok, ids, **kw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(MODEL_CLASSES)), skip=st.booleans(), text=TEXT, data=st.data())
def test_property_transformers_model_tokenizers(name, skip, text, data):
    tok = MODEL_CLASSES[name]
    kw = {"skip_special_tokens": skip}
    noise = data.draw(st.lists(st.integers(0, len(tok) + 2), max_size=8))
    ids = tok.encode(text) + noise  # real text (with BOS where the class adds one) then any ids
    texts = token_texts(tok, ids, decode_kwargs=kw, verify=True)
    assert token_texts(tok, ids, decode_kwargs=kw, verify=False) == texts
    assert token_texts(tok, ids, decode_kwargs=kw) == texts
    texts = _known(texts, ids, max(tok.get_vocab().values()) + 1)
    full = tok.decode(ids, **kw)
    assert "".join(texts) == full and len(texts) == len(ids)
    if "\ufffd" not in full:
        assert texts == prefix_oracle(tok, ids, **kw)


def test_batch_equals_single_rows():
    rows = [BPE.encode(line) for line in CORPUS[:6]] + [[]]
    assert token_texts_batch(BPE, rows) == [token_texts(BPE, r) for r in rows]
    assert token_texts_batch(RAW["byte_bpe"], rows) == [token_texts(BPE, r) for r in rows]
