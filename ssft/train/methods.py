"""The training methods as objects: which tag each of a question's traces is trained under, and what that
needs. Every method trains the very same sequences per step (all M traces of each question); only the tags
differ. A new objective is one new class here, registered in :data:`METHODS`.

    ssft    Hungarian matching on the no-grad cost (paper Eq. 2-3), recomputed every step   scores, tagged
    sft     one shared ``<think>`` for every trace ("SFT-mixed")                             untagged
    random  a fresh random injective assignment every step (P-SFT's random prefix)          tagged
    fixed   tag i always gets strategy i (an oracle, synthetic tasks only)                  tagged

``tagged`` also decides evaluation: a tagged model is prompted with each of its N tags, an untagged one with
its single shared tag. This module imports neither torch nor numpy at load (``ssft.config`` reads
:data:`NAMES` from here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from ssft.errors import UserError

if TYPE_CHECKING:
    import numpy as np

Tags = list[int | None]  # per trace: its tag (1-based), None = the shared tag


class Method:
    name: ClassVar[str]
    scores: ClassVar[bool] = False   # needs the (trace x tag) cost matrix of the model before each step
    tagged: ClassVar[bool] = True    # trained and prompted with numbered tags (False: one shared tag)

    def tags(self, strategy: Sequence[int], num_tags: int, cost: np.ndarray | None,
             rng: np.random.Generator) -> Tags:
        """The tag of each trace; ``strategy``: each trace's 0-based source index, ``cost``: (M, N) or None."""
        raise NotImplementedError

    def eval_tags(self, num_tags: int) -> Tags:
        """The tags evaluation prompts the trained model with."""
        return list(range(1, num_tags + 1)) if self.tagged else [None]


class SSFT(Method):
    name, scores = "ssft", True

    def tags(self, strategy: Sequence[int], num_tags: int, cost: np.ndarray | None,
             rng: np.random.Generator) -> Tags:
        from ssft.train.matching import assign  # torch and scipy: only once a step needs them

        if cost is None:
            raise ValueError("ssft assigns tags by the cost matrix")
        return [int(t) + 1 for t in assign(cost, rng)]


class SFT(Method):
    name, tagged = "sft", False

    def tags(self, strategy: Sequence[int], num_tags: int, cost: np.ndarray | None,
             rng: np.random.Generator) -> Tags:
        return [None] * len(strategy)


class Random(Method):
    name = "random"

    def tags(self, strategy: Sequence[int], num_tags: int, cost: np.ndarray | None,
             rng: np.random.Generator) -> Tags:
        return [int(t) + 1 for t in rng.permutation(num_tags)[: len(strategy)]]


class Fixed(Method):
    name = "fixed"

    def tags(self, strategy: Sequence[int], num_tags: int, cost: np.ndarray | None,
             rng: np.random.Generator) -> Tags:
        if max(strategy) >= num_tags:
            raise UserError(f"method 'fixed' needs ssft.num_tags >= {max(strategy) + 1} (one tag per source)")
        return [s + 1 for s in strategy]


# What an RL stage after training (ssft.train.gfpo) puts the loss on: the tag only (GFPO), every generated
# token (GRPO, the paper's baseline), or auto: the tag for a tagged model, every token for the untagged sft.
RL_SCOPES = ("auto", "tag", "all")
# Which weights GFPO updates: all of them (as the paper), or only the output head's rows of the N tags.
RL_PARAMS = ("all", "tag_rows")


def rl_scope(scope: str, method: Method) -> str:
    if scope not in RL_SCOPES:
        raise UserError(f"gfpo.scope={scope!r}: use one of {', '.join(RL_SCOPES)}")
    if scope == "auto":
        return "tag" if method.tagged else "all"
    if scope == "tag" and not method.tagged:
        raise UserError(f"gfpo.scope=tag on a {method.name} model: it has one shared tag, so there is no tag "
                        "choice to train; use gfpo.scope: all (GRPO) or auto")
    return scope


def rl_label(name: str, scope: str) -> str:
    """How reports name a model after its RL stage: ssft+gfpo (the tag only), sft+grpo (every token)."""
    return f"{name}+{'gfpo' if scope == 'tag' else 'grpo'}"


METHODS: dict[str, Method] = {m.name: m for m in (SSFT(), SFT(), Random(), Fixed())}
NAMES = tuple(METHODS)
UNTAGGED = tuple(n for n, m in METHODS.items() if not m.tagged)  # one shared tag: what prefix forcing may steer


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"method {name!r}: use one of {', '.join(NAMES)}") from None
