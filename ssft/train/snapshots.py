"""Model snapshots along training, for learning curves (``eval.every_steps``): every k steps the weights are
saved to ``<checkpoints>/<method>/steps/step-<k>``; when training ends each snapshot gets the final model
directory's tokenizer and ``tags.json`` (not its ``train_stats.json``: Eq. 4's best tag from the whole run
would leak the future into a mid-way point), so it is a model directory like any other (``ssft evaluate --curve``
evaluates each one). The Trainer's own checkpoints cannot serve: it keeps only the last two, each with its
optimizer state (three times the weights).

Snapshots live beside the resumable checkpoints, so they move aside with them when the configuration changes
and a resumed run keeps the ones written before it was killed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from transformers import TrainerCallback

from ssft.atomic import replace_dir, temp_path
from ssft.train.models import STATS_FILE

log = logging.getLogger(__name__)
STEPS_DIR = "steps"
PREFIX = "step-"
WEIGHTS = ("*.safetensors", "config.json", "generation_config.json")  # what a snapshot writes itself
# the finished run's statistics describe the whole run (Eq. 4's best tag, dead tags): a snapshot mid-way has none
WHOLE_RUN = (STATS_FILE,)


def root(ckpt_dir: Path) -> Path:
    return Path(ckpt_dir) / STEPS_DIR


def listed(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every finished snapshot, by step (a temp left by a kill is not one)."""
    found = [(int(p.name[len(PREFIX):]), p) for p in root(ckpt_dir).glob(f"{PREFIX}*")
             if p.name[len(PREFIX):].isdigit() and p.is_dir()]
    return sorted(found)


class SnapshotCallback(TrainerCallback):
    """Saves the weights every ``every`` optimizer steps (rank 0; the model is whole: no FSDP, no LoRA)."""

    def __init__(self, every: int, ckpt_dir: Path) -> None:
        self.every, self.dir = every, root(ckpt_dir)

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if state.global_step % self.every or not state.is_world_process_zero or model is None:
            return
        out = self.dir / f"{PREFIX}{state.global_step}"
        tmp = temp_path(out)
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        replace_dir(tmp, out)


def complete(ckpt_dir: Path, model_dir: Path) -> int:
    """Give every snapshot the finished model's other files (tokenizer, tags.json; not the run's statistics);
    returns how many snapshots there are."""
    snaps = listed(ckpt_dir)
    extras = [f for f in Path(model_dir).iterdir()
              if f.is_file() and not any(f.match(pattern) for pattern in (*WEIGHTS, *WHOLE_RUN))]
    for _, snap in snaps:
        for f in extras:
            shutil.copy2(f, snap / f.name)
    if snaps:
        log.info("%d snapshots for the learning curve in %s (steps %s)", len(snaps), root(ckpt_dir),
                 ", ".join(str(s) for s, _ in snaps))
    return len(snaps)
