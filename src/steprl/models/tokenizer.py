"""A byte-level tokenizer made in code: every byte is one token, no merges, no download.

The tiny models use it. It encodes any text (UTF-8 bytes), and for ASCII one character is one token, so
step boundaries (newlines) fall exactly on token boundaries.
"""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")


def _byte_alphabet() -> list[str]:
    return sorted(pre_tokenizers.ByteLevel.alphabet())


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """Return a fast HF tokenizer with 4 special tokens followed by the 256 byte symbols (260 ids)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for sym in _byte_alphabet():
        vocab[sym] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    tok.padding_side = "left"
    return tok
