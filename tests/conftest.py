"""Shared fixtures: tokenizers and experiences built here, never downloaded."""
from __future__ import annotations

import pytest

# An OpenRLHF-style experience of prompt and response texts; the package's own toy, so that the
# docstring examples and the tests build experiences the same way.
from openrlhf_ext.trajectory.toy import toy_experience as make_experience  # noqa: F401

CORPUS = [
    "The answer is 42. Let me check: 6 * 7 = 42, so the answer is 42.",
    "Wait, maybe I should reconsider. First, compute 12 + 30 = 42.",
    "我们来计算一下：三加四等于七。答案是七。",
    "Emoji test 🙂🚀 and café naïve façade — “quotes” and tabs\tand\nnewlines.",
    "def f(x):\n    return x ** 2  # square\n",
    "∫ x dx = x²/2 + C; √2 ≈ 1.414; π ≈ 3.14159",
]


def make_byte_level_tokenizer(vocab_size: int = 400):
    """A GPT-2/Qwen-style byte-level BPE tokenizer, trained here on a few lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


@pytest.fixture(scope="session")
def tokenizer():
    return make_byte_level_tokenizer()
