"""The global forking tokens: tag strings, adding them to a tokenizer, and the one prompt layout.

Every prompt the model ever sees, in training, in scoring and in evaluation, comes from
:func:`prompt_ids` with one :class:`PromptLayout`, so a tag can never tokenize differently at train and at
eval time (the failure that left Parallel-R1's released checkpoints emitting no tags). Training builds the
layout from ``model.tag_format`` (:meth:`PromptLayout.for_tokenizer`); the model directory keeps it in
``tags.json`` and evaluation rebuilds it from there (:meth:`PromptLayout.from_meta`).

Layouts (tags from ``model.tag_format``, default ``<think{i}>``; the shared SFT tag is ``<think>``):
    plain (no chat template)  {bos}{question}<thinkI>          then  {trace}{eos}
    chat (chat template)      {chat template, generation prompt}<thinkI>\\n   then  {trace}{eos}
The plain layout is the tiny char-level model's (``<s>3+2?<think2>``) and that of a pretrained checkpoint
without a chat template; ``{bos}`` is empty when the tokenizer has no bos token.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ssft.errors import UserError

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"


@dataclass(frozen=True)
class PromptLayout:
    """The strings around every trace: the tags, and whether the chat template frames the question.

    >>> PromptLayout.from_format("<think{i}>", 2, chat=False)
    PromptLayout(tags=('<think1>', '<think2>'), shared_tag='<think>', chat=False)
    """

    tags: tuple[str, ...]   # tag 1..N, e.g. <think1>..<thinkN>
    shared_tag: str         # the single tag of the plain-SFT baseline ("SFT-mixed"): the format without {i}
    chat: bool              # True: the tokenizer's chat template with the generation prompt, then tag + "\n"

    @classmethod
    def from_format(cls, tag_format: str, n_tags: int, chat: bool) -> PromptLayout:
        """``tag_format`` as ``model.tag_format``: ``{i}`` is replaced by 1..N, or removed for the shared tag."""
        tags = tuple(tag_format.replace("{i}", str(i)) for i in range(1, n_tags + 1))
        return cls(tags, tag_format.replace("{i}", ""), chat)

    @classmethod
    def for_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, tag_format: str, n_tags: int) -> PromptLayout:
        """The training-time layout: chat iff the tokenizer has a chat template."""
        return cls.from_format(tag_format, n_tags, uses_chat_template(tokenizer))

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> PromptLayout:
        """The layout a trained model directory's ``tags.json`` recorded (see :meth:`meta`)."""
        return cls(tuple(meta["tags"]), meta["shared_tag"], bool(meta["chat_template"]))

    def meta(self) -> dict[str, Any]:
        return {"tags": list(self.tags), "shared_tag": self.shared_tag, "chat_template": self.chat}

    @property
    def all_tags(self) -> tuple[str, ...]:
        """The shared tag, then tags 1..N: every string that must be a single token."""
        return (self.shared_tag, *self.tags)

    def tag(self, tag: int | None) -> str:
        """Tag 1..N -> ``<thinkI>``; None (the untagged SFT baseline) -> the shared ``<think>``."""
        return self.shared_tag if tag is None else self.tags[tag - 1]


def build_char_tokenizer(tags: Sequence[str]) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII, with ``tags`` as single special tokens."""
    specials = [PAD, BOS, EOS, UNK]
    vocab = {tok: i for i, tok in enumerate(specials + list(ALPHABET))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK)
    add_tags(fast, tags)
    return fast


def add_tags(tokenizer: PreTrainedTokenizerBase, tags: Sequence[str]) -> list[int]:
    """Add the ``tags`` the vocabulary lacks as never-split special tokens; return the id of each tag.

    Tags already in the vocabulary (a trained ``<think>`` of Qwen3 or an R1 distill) are reused as they are.
    """
    missing = [t for t in tags if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return tag_ids(tokenizer, tags)


def tag_ids(tokenizer: PreTrainedTokenizerBase, tags: Sequence[str]) -> list[int]:
    """The id of each tag; raises if one does not encode to exactly one id (missing, or normalised away)."""
    ids = []
    for t in tags:
        enc = tokenizer.encode(t, add_special_tokens=False)
        if len(enc) != 1:
            raise UserError(f"tag {t!r} encodes to {len(enc)} ids {enc}; it must be a single token "
                             "(add it with add_tags, using the same model.tag_format as the tokenizer)")
        ids.append(enc[0])
    return ids


def uses_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer: PreTrainedTokenizerBase, layout: PromptLayout, question: str, tag: int | None) -> str:
    """The exact text that precedes a trace: question, then the forking token."""
    if layout.chat:
        head = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
        return f"{head}{layout.tag(tag)}\n"
    return f"{tokenizer.bos_token or ''}{question}{layout.tag(tag)}"


def prompt_ids(tokenizer: PreTrainedTokenizerBase, layout: PromptLayout, question: str,
               tag: int | None) -> list[int]:
    """Token ids of :func:`prompt_text`; the only way prompts are tokenized, in training and evaluation."""
    return tokenizer.encode(prompt_text(tokenizer, layout, question, tag), add_special_tokens=False)


def question_ids(tokenizer: PreTrainedTokenizerBase, layout: PromptLayout, question: str) -> list[int]:
    """The tag-independent head of every prompt of ``question`` (the shared prefix scoring caches)."""
    full = prompt_ids(tokenizer, layout, question, 1)
    tail = len(tokenizer.encode(layout.tag(1) + ("\n" if layout.chat else ""), add_special_tokens=False))
    return full[:-tail]


def completion_ids(tokenizer: PreTrainedTokenizerBase, trace: str) -> list[int]:
    """A trace as trained: its tokens, then end-of-sequence."""
    return tokenizer.encode(trace, add_special_tokens=False) + [tokenizer.eos_token_id]
