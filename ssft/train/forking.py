"""The global forking tokens: tag strings, adding them to a tokenizer, and the one prompt layout.

Every prompt the model ever sees, in training, in scoring and in evaluation, comes from
:func:`prompt_ids`, so a tag can never tokenize differently at train and at eval time (the failure that
left Parallel-R1's released checkpoints emitting no tags).

Layouts:
    plain (char tokenizer)   <s>{question}<thinkI>            then  {trace}</s>
    chat (pretrained model)  {chat template, generation prompt}<thinkI>\\n   then  {trace}{eos}
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

SHARED_TAG = "<think>"  # the single tag of the plain-SFT baseline ("SFT-mixed")
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"


def tag_token(i: int) -> str:
    """The i-th forking token, 1-based: ``<think1>``."""
    return f"<think{i}>"


def tag_tokens(n: int) -> list[str]:
    return [tag_token(i) for i in range(1, n + 1)]


def build_char_tokenizer(n_tags: int) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII, with the tags as single special tokens."""
    specials = [PAD, BOS, EOS, UNK]
    vocab = {tok: i for i, tok in enumerate(specials + list(ALPHABET))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK)
    add_tags(fast, n_tags)
    return fast


def add_tags(tokenizer: PreTrainedTokenizerBase, n_tags: int) -> list[int]:
    """Add ``<think>`` and ``<think1>..<thinkN>`` as never-split tokens; return the N tag ids.

    Raises if any tag does not encode to exactly one id (e.g. a tokenizer that normalises it away).
    """
    wanted = [SHARED_TAG] + tag_tokens(n_tags)
    missing = [t for t in wanted if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = []
    for t in wanted:
        enc = tokenizer.encode(t, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(f"tag {t!r} encodes to {len(enc)} ids {enc}; it must be a single token")
        ids.append(enc[0])
    return ids[1:]


def tag_string(tag: int | None) -> str:
    """Tag 1..N -> ``<thinkI>``; None (the untagged SFT baseline) -> the shared ``<think>``."""
    return SHARED_TAG if tag is None else tag_token(tag)


def uses_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer: PreTrainedTokenizerBase, question: str, tag: int | None) -> str:
    """The exact text that precedes a trace: question, then the forking token."""
    if uses_chat_template(tokenizer):
        head = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
        return f"{head}{tag_string(tag)}\n"
    return f"{tokenizer.bos_token}{question}{tag_string(tag)}"


def prompt_ids(tokenizer: PreTrainedTokenizerBase, question: str, tag: int | None) -> list[int]:
    """Token ids of :func:`prompt_text`; the only way prompts are tokenized, in training and evaluation."""
    return tokenizer.encode(prompt_text(tokenizer, question, tag), add_special_tokens=False)


def question_ids(tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    """The tag-independent head of every prompt of ``question`` (the shared prefix scoring caches)."""
    full = prompt_ids(tokenizer, question, 1)
    tail = len(tokenizer.encode(tag_string(1) + ("\n" if uses_chat_template(tokenizer) else ""),
                                add_special_tokens=False))
    return full[:-tail]


def completion_ids(tokenizer: PreTrainedTokenizerBase, trace: str) -> list[int]:
    """A trace as trained: its tokens, then end-of-sequence."""
    return tokenizer.encode(trace, add_special_tokens=False) + [tokenizer.eos_token_id]
