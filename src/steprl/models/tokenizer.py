"""A byte-level tokenizer made in code: every byte is one token, no merges, no download.

The tiny models use it. It encodes any text (UTF-8 bytes), and for ASCII one character is one token, so
step boundaries (newlines) fall exactly on token boundaries.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from steprl.config import ConfigError

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
    return fast_tokenizer(core)


# ------------------------------------------------------------------------------ a word tokenizer from a corpus
# Pre-tokens: a run of whitespace, a run of letters, or one other character. A space is never part of a word's
# token, so a word is the same tokens after a space as after a tag: copying it is copying token ids.
_PIECES = r"\s+|[A-Za-z]+|[^\sA-Za-z]"


def train_word_tokenizer(corpus: Iterable[str], tags: Sequence[str], vocab_size: int) -> str:
    """A BPE tokenizer trained on ``corpus`` (deterministic, no download), as ``tokenizers`` JSON: the 4 special
    tokens, the 256 byte symbols (so any text encodes and decodes exactly), merges up to ``vocab_size`` entries
    (fewer once every word of the corpus is one token) and each of ``tags`` as one token. Spaces and punctuation
    are tokens of their own (``_PIECES``). A task that wants one builds its corpus and wraps the JSON with
    :func:`fast_tokenizer` (``model.tiny.tokenizer`` names that builder)."""
    from tokenizers import AddedToken, Regex, trainers

    if vocab_size < len(SPECIAL_TOKENS) + len(tags) + 256:
        raise ConfigError(f"tokenizer vocab_size={vocab_size} is below its {len(SPECIAL_TOKENS) + len(tags) + 256} "
                          "fixed entries (special tokens, tags, bytes)")
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(tags), special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=_byte_alphabet(), show_progress=False)
    core.train_from_iterator(corpus, trainer=trainer)
    core.add_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=False)
                     for t in tags])
    return core.to_str()


def fast_tokenizer(core: Tokenizer | str) -> PreTrainedTokenizerFast:
    """The HF tokenizer (left padding, the 4 special tokens) around a ``tokenizers`` model (or its JSON)."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(core) if isinstance(core, str) else core,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    tok.padding_side = "left"
    return tok


def build_tiny_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """The tokenizer of a ``model.tiny`` model (``model.tiny.tokenizer``): ``bytes``, or the dotted path of a
    function that returns one (e.g. ``steprl.tasks.search_qa.search_qa_tokenizer``: a task's own word tokenizer,
    named in the config as any ``_target_`` is, so this layer does not import the tasks)."""
    if name == "bytes":
        return build_byte_tokenizer()
    module, _, attr = name.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr, None) if module else None
    except ImportError:
        fn = None
    if not callable(fn):
        raise ConfigError(f"model.tiny.tokenizer={name!r} is neither 'bytes' nor the dotted path of a tokenizer "
                          "builder (e.g. steprl.tasks.search_qa.search_qa_tokenizer)")
    return fn()
