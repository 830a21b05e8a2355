"""Config validation: every mistake is one readable message naming the field, the bad value
and what is allowed; `config_diff` (resume's guard) names what changed."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from loop.config import ROOT, Config, ConfigError, load_config
from loop.runner import config_diff

DEFAULT = ROOT / "configs" / "default.yaml"
RAW = yaml.safe_load(DEFAULT.read_text())


def error(overrides=(), edit=None, path=None) -> str:
    """The ConfigError message of loading the default config with `overrides` / `edit(raw)`."""
    raw = copy.deepcopy(RAW)
    if edit:
        edit(raw)
    with pytest.raises(ConfigError) as e:
        if path is not None:
            load_config(path, list(overrides))
        else:
            load_config(None, list(overrides), raw=raw)
    msg = str(e.value)
    assert "Traceback" not in msg and "Value error," not in msg and "For further information" not in msg
    return msg


def has(msg: str, *parts: str) -> None:
    for p in parts:
        assert p in msg, f"{p!r} not in:\n{msg}"


def test_default_config_loads():
    cfg = load_config(DEFAULT)
    assert isinstance(cfg, Config) and cfg.category_keys() == ["arithmetic/add", "arithmetic/sub"]
    assert load_config(DEFAULT, ["loop.rounds=5", "sampling.n=8"]).loop.rounds == 5


def test_unknown_keys_list_the_allowed_ones():
    has(error(edit=lambda r: r.update(sampler={"n": 1})), "sampler: unknown key", "allowed keys here:", "sampling",
        "cluster")
    has(error(["sampling.temprature=0.5"]), "sampling.temprature: unknown key", "(got 0.5)",
        "allowed keys here: n, temperature, top_p")
    has(error(["generators.0.categories.add.budgt=3"]), "generators.0.categories.add.budgt: unknown key",
        "allowed keys here: budget, difficulty, heldout_difficulties")
    has(error(["cluster.sampler.cpus=2"]), "cluster.sampler.cpus", "num_cpus")


def test_wrong_type_range_and_literal():
    has(error(["loop.rounds=abc"]), "loop.rounds", "valid integer", "(got 'abc')")
    has(error(["sampling.top_p=2"]), "sampling.top_p", "less than or equal to 1", "(got 2)")
    has(error(["loop.rounds=0"]), "loop.rounds", "greater than or equal to 1", "(got 0)")
    msg = error(["training.mode=foo"])
    has(msg, "training.mode", "'restart'", "'continue'", "(got 'foo')")
    assert msg.count("'restart'") == 1


def test_generator_mistakes():
    has(error(edit=lambda r: r["generators"][0].update(family="nope")),
        "generators.0.family", "unknown generator family 'nope'", "arithmetic", "rules")
    has(error(edit=lambda r: r["generators"][0].update(options={"max_digits": 99})),
        "generators.0.options (arithmetic)", "max_digits", "(got 99)", "allowed options: template, max_digits")
    has(error(edit=lambda r: r["generators"][0]["categories"].update(div={"budget": 4})),
        "generators.0.categories", "unknown category 'div'", "available: add, mul, sub")
    has(error(["generators.0.categories.add.difficulty=9"]),
        "generators.0.categories.add", "difficulty 9", "allowed: 1..8")
    has(error(["generators.0.categories.mul.heldout_difficulties=[1, 0]"]), "difficulty 0", "allowed: 1..8")
    has(error(edit=lambda r: r["generators"].append({"family": "arithmetic", "categories": {"add": {"budget": 3}}})),
        "generators.1.categories.add", "arithmetic/add", "already listed", "merge")


def test_verifier_and_policy_mistakes():
    has(error(edit=lambda r: r["verifiers"].append({"name": "exact_mach"})),
        f"verifiers.{len(RAW['verifiers'])}.name", "unknown verifier 'exact_mach'", "exact_match", "llm_judge")
    has(error(edit=lambda r: r["verifiers"][0].update(options={"casefld": True})),
        "verifiers.0.options (exact_match)", "casefld", "(got True)", "allowed options: casefold")
    has(error(edit=lambda r: r["verifiers"][0].update(options={"casefold": "maybe"})),
        "verifiers.0.options", "casefold", "'maybe'")
    has(error(["policies.targeting.name=verified"]),
        "policies.targeting.name", "'verified' is an acceptance policy", "targeting policies:", "uniform")
    has(error(["policies.stopping.name=nah"]), "policies.stopping.name", "unknown policy 'nah'", "patience")
    has(error(["policies.acceptance.options={max_per_problem: 0}"]),
        "policies.acceptance.options (verified)", "max_per_problem", "(got 0)", "allowed options:")


def test_set_syntax():
    has(error(["loop.rounds"]), "--set 'loop.rounds'", "key.path=value", "--set loop.rounds=5")
    has(error(["=3"]), "empty key")
    rounds = load_config(DEFAULT).loop.rounds
    has(error(["loop.rounds.x=3"]), f"loop.rounds is a value ({rounds})", "--set loop.rounds=")
    # list items are addressed by index; a wrong index says how long the list is
    cfg = load_config(DEFAULT, ["generators.0.categories.add.budget=8", "verifiers.1.required=true"])
    assert cfg.generators[0].categories["add"].budget == 8 and cfg.verifiers[1].required
    has(error(["generators.3.categories.add.budget=8"]), "generators.3", "index 3 is out of range for generators (a list "
        "of 1); valid indexes: 0..0")
    has(error(["generators.-1.family=rules"]), "'-1' is not a valid index into generators (negative indexes are not "
        "supported")
    has(error(["generators.first.family=rules"]), "'first' is not a valid index")


def test_files(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  name: [x\nloop: {rounds: 2}\n")
    msg = error(path=bad)
    has(msg, str(bad), "not valid YAML", "line ")
    assert len(msg.splitlines()) == 1
    has(error(path=tmp_path / "missing.yaml"), "missing.yaml does not exist", "configs/")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    has(error(path=listy), "must be a mapping", "list")


def test_config_diff_names_changes_and_ignores_rounds():
    old = load_config(DEFAULT)
    assert config_diff(old, load_config(DEFAULT, ["loop.rounds=9"])) == []
    diff = config_diff(old, load_config(DEFAULT, ["loop.rounds=9", "sampling.temperature=0.33"]))
    assert diff == [f"sampling.temperature: {old.sampling.temperature!r} -> 0.33"]
    diff = config_diff(old, load_config(DEFAULT, ["generators.0.categories.add.budget=7"]))
    budget = old.generators[0].categories["add"].budget
    assert diff == [f"generators.0.categories.add.budget: {budget} -> 7"]
    extra = load_config(None, raw={**copy.deepcopy(RAW), "verifiers": RAW["verifiers"] + [{"name": "numeric"}]})
    assert any(d.startswith(f"verifiers.{len(RAW['verifiers'])}.name: None -> 'numeric'")
               for d in config_diff(old, extra))


def test_every_shipped_config_validates():
    for path in sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml")):
        load_config(path)


def test_float32_never_reaches_vllm_on_a_gpu():
    # vLLM's CUDA LoRA kernels take only fp16/bf16: refuse float32 when the sampler has a GPU.
    has(error(["cluster.sampler.num_gpus=0.5", "model.dtype=float32"]), "model.dtype: float32",
        "cluster.sampler.num_gpus", "set model.dtype: bfloat16")
    assert load_config(DEFAULT, ["cluster.sampler.num_gpus=0.5", "model.dtype=bfloat16"]).model.dtype == "bfloat16"
    assert load_config(DEFAULT, ["cluster.sampler.num_gpus=0.5", "model.dtype=auto"]).model.dtype == "auto"
    assert load_config(DEFAULT, ["model.dtype=float32"]).model.dtype == "float32"  # CPU sampler: fine
