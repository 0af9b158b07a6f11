"""Config: the shipped params.yaml is valid; every field documents itself; bad input names field and fix."""

import dataclasses
from pathlib import Path

import pytest

from ssft import config

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_load() -> None:
    cfg = config.load(ROOT / "params.yaml")
    assert cfg.task.name == "add4" and cfg.ssft.num_tags >= 4


def test_every_field_has_help() -> None:
    for cls in config.SECTIONS.values():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


@pytest.mark.parametrize("raw, match", [
    ({"train": {"max_stepz": 3}}, r"train.max_stepz: unknown setting"),
    ({"trian": {}}, r"trian: unknown section"),
    ({"train": {"max_steps": "ten"}}, r"train.max_steps: 'ten' is not a int"),
    ({"train": {"max_steps": 0}}, r"train.max_steps: 0 is invalid; use >= 1"),
    ({"train": {"methods": ["ssft", "dpo"]}}, r"train.methods"),
    ({"eval": {"samples": 6}}, r"eval.samples: 6 is invalid; use a positive multiple of ssft.num_tags=4"),
    ({"eval": {"ks": [64]}}, r"eval.ks"),
    ({"model": {"hidden_size": 30, "num_heads": 4}}, r"model.hidden_size.*divisible by model.num_heads"),
    ({"model": {"dtype": "fp8"}}, r"model.dtype"),
    ({"ssft": {"cost_tokens": -1}}, r"ssft.cost_tokens"),
    ({"seed": -1}, r"seed: -1 is invalid; use a seed >= 0"),
    ({"model": {"num_heads": 0}}, r"model.num_heads: 0 is invalid; model sizes"),
    ({"ssft": {"num_tags": 0}}, r"ssft.num_tags: 0 is invalid"),
    ({"train": {"threads": -1}}, r"train.threads: -1 is invalid"),
    ({"train": {"save_steps": 0}}, r"train.save_steps: 0 is invalid; use >= 1: a checkpoint is what a killed run"),
    ({"train": {"scheduler": "cosin"}}, r"train.scheduler: 'cosin' is invalid; use one of linear, cosine"),
    ({"data": {"source": "import"}}, r"data.path: None is invalid; data.source=import needs a file"),
    ({"data": {"source": "generate", "path": "q.jsonl", "teachers": [{"name": "a", "backend": "openai",
                                                                      "model": "m"}]}},
     r"data.teachers\[0\].base_url: None is invalid; openai needs the server"),
])
def test_bad_values_name_the_field(raw: dict, match: str) -> None:
    with pytest.raises(config.ConfigError, match=match):
        config.from_dict(raw)


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(config.ConfigError) as e:
        config.from_dict({"train": {"max_stepz": 1, "lr": "fast"}, "eval": {"tmp": 1}})
    assert "3 problem(s)" in str(e.value)


@pytest.mark.parametrize("text, match", [
    ("", r"empty; copy the project's params.yaml"),
    ("# only a comment\n", r"empty"),
    ("train:\n  lr: 0.1\nseed: 1\ntrain:\n  max_steps: 3\n", r"key 'train' appears twice \(line 4\); keep one"),
    ("train:\n  lr: 0.1\n  lr: 0.2\n", r"key 'lr' appears twice"),
])
def test_files_that_would_silently_change_the_run_are_refused(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    with pytest.raises(config.ConfigError, match=match):
        config.load(p)


def test_overrides_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  max_steps: 5\n")
    assert config.load(p, {"train.max_steps": 7, "ssft.num_tags": 8}).train.max_steps == 7
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")


# Where the shipped params.yaml (the CPU demo) differs from the config defaults (what a missing key gets), and
# why. Any other difference is a default living in two places and fails the test below.
DEMO_DIFFERENCES = {
    "model.hidden_size": (128, 96),          # the demo's 0.45M model trains in minutes on 2 cores
    "model.intermediate_size": (512, 384),
    "train.threads": (0, 1),                 # one thread per stage: two stages can share the 2 cores
    "eval.max_new_tokens": (64, 48),         # add4 traces are short
    "eval.batch_size": (256, 512),
}


def test_params_yaml_equals_the_config_defaults_but_for_the_stated_differences() -> None:
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("options", "columns"):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    defaults, shipped = flat(config.from_dict({}).to_dict()), flat(config.load(ROOT / "params.yaml").to_dict())
    differences = {k: (defaults[k], shipped[k]) for k in defaults if defaults[k] != shipped[k]}
    assert differences == DEMO_DIFFERENCES
