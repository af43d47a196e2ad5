"""A byte-level tokenizer made in code: every byte is one token, no merges, no download.

The tiny models use it. It encodes any text (UTF-8 bytes), and for ASCII one character is one token, so
step boundaries (newlines) fall exactly on token boundaries.
"""
from __future__ import annotations

import functools

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


# ------------------------------------------------------------------------ a word-piece tokenizer for search_qa
SEARCH_QA_TAGS = ("<think>", "</think>", "<search>", "</search>", "<information>", "</information>",
                  "<answer>", "</answer>")
SEARCH_QA_VOCAB = 2048
# Pre-tokens: a run of whitespace, a run of letters, or one other character. A space is never part of a word's
# token, so a name is the same tokens after a space (in a question or a document) as after a tag (in a thought
# or a query): copying it is copying token ids.
_PIECES = r"\s+|[A-Za-z]+|[^\sA-Za-z]"


def _search_qa_corpus() -> list[str]:
    """The text the search tokenizer is trained on, made in code: task=search_qa_tiny's knowledge base
    (seed 0, its kb_size and name_syllables) — every document, every question and every scripted episode."""
    from steprl.tasks.search_qa import SearchQATask

    task = SearchQATask(seed=0, kb_size={"people": 150, "companies": 50, "cities": 50, "countries": 10},
                        num_val=128, prompt_template="Question: {question}\n", topk=1, max_turns=3)
    samples = list(task.val_dataset()) + list(task.train_dataset())
    return [d.text for d in task.docs] + [s.prompt + s.solution for s in samples]


def build_search_qa_tokenizer(vocab_size: int = SEARCH_QA_VOCAB) -> PreTrainedTokenizerFast:
    """A BPE tokenizer for ``task=search_qa`` made in code (no download, deterministic): the 4 special tokens,
    the 8 Search-R1 tags as single tokens, the 256 byte symbols (so any text encodes and decodes exactly) and
    merges learned on :func:`_search_qa_corpus` up to ``vocab_size`` entries (fewer once every word of the
    corpus is one token: 1736 in all), so each word of an entity name is one token. Spaces and punctuation are
    tokens of their own (see ``_PIECES``)."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_search_qa_core(vocab_size)),
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    tok.padding_side = "left"
    return tok


@functools.lru_cache(maxsize=2)
def _search_qa_core(vocab_size: int) -> str:
    """The trained ``tokenizers`` model as JSON (cached: building the corpus takes seconds)."""
    from tokenizers import AddedToken, Regex, trainers

    if vocab_size < len(SPECIAL_TOKENS) + len(SEARCH_QA_TAGS) + 256:
        raise ValueError(f"search_qa tokenizer vocab_size={vocab_size} is below its 268 fixed entries")

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SEARCH_QA_TAGS), special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=_byte_alphabet(), show_progress=False)
    core.train_from_iterator(_search_qa_corpus(), trainer=trainer)
    core.add_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=False)
                     for t in SEARCH_QA_TAGS])
    return core.to_str()


TINY_TOKENIZERS = {"bytes": build_byte_tokenizer, "bpe_search_qa": build_search_qa_tokenizer}


def build_tiny_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """The tokenizer of a ``model.tiny`` model by name (``model.tiny.tokenizer``)."""
    if name not in TINY_TOKENIZERS:
        raise ValueError(f"model.tiny.tokenizer={name!r} is not one of {sorted(TINY_TOKENIZERS)}")
    return TINY_TOKENIZERS[name]()
