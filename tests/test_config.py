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
])
def test_bad_values_name_the_field(raw: dict, match: str) -> None:
    with pytest.raises(config.ConfigError, match=match):
        config.from_dict(raw)


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(config.ConfigError) as e:
        config.from_dict({"train": {"max_stepz": 1, "lr": "fast"}, "eval": {"tmp": 1}})
    assert "3 problem(s)" in str(e.value)


def test_overrides_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  max_steps: 5\n")
    assert config.load(p, {"train.max_steps": 7, "ssft.num_tags": 8}).train.max_steps == 7
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
