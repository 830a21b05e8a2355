"""Bad input, round three: checks that used to come after Ray/vLLM started (or never), inputs whose
size made the loop hang, and messages that echoed megabytes. Each is refused before anything starts,
with the field or file (and line) and the fix, and without reading more than it must."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from generators.base import GENERATORS
from loop.config import ROOT, ConfigError, load_config
from loop.preflight import PreflightError, estimate_run_bytes, preflight

DEFAULT = ROOT / "configs" / "default.yaml"


def cfg(tmp_path, *overrides: str):
    return load_config(DEFAULT, [f"run.state_dir={tmp_path}", *overrides])


def refused(tmp_path, *overrides: str) -> list[str]:
    with pytest.raises(PreflightError) as e:
        preflight(cfg(tmp_path, *overrides))
    return e.value.problems


def config_error(*overrides: str, path=DEFAULT) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, list(overrides))
    return str(e.value)


# ---- checks before the engines --------------------------------------------------------------------
def test_sampling_n_beyond_vllms_limit_is_a_config_error():
    msg = config_error("sampling.n=100000000000")
    assert "sampling.n" in msg and "16384" in msg
    load_config(DEFAULT, ["sampling.n=16384"])


def test_max_tokens_beyond_the_context_is_an_error_not_a_warning():
    msg = config_error("sampling.max_tokens=600", "model.max_model_len=512")
    assert "sampling.max_tokens: 600" in msg and "model.max_model_len" in msg


def test_kv_cache_larger_than_the_machine(tmp_path):
    (line,) = [p for p in refused(tmp_path, "cluster.sampler.kv_cache_gib=100000")
               if p.startswith("cluster.sampler.kv_cache_gib")]
    assert "100000 GiB" in line and "memory" in line


def test_train_length_beyond_the_models_positions(tmp_path):
    (line,) = refused(tmp_path, "training.max_seq_len=4096")
    assert line.startswith("training.max_seq_len: 4096") and "max_position_embeddings (1024)" in line


def test_not_enough_disk_for_what_the_run_writes(tmp_path):
    """A run of a million rounds writes more than any disk here holds: refused before the run
    directory exists (a 24 KiB state dir used to die at setup/heldout with 'unexpected OSError')."""
    problems = refused(tmp_path, "loop.rounds=1000000")
    (line,) = [p for p in problems if p.startswith("run.state_dir")]
    assert "MiB free" in line and "write about" in line
    assert not (tmp_path / "runs").exists()
    c = cfg(tmp_path)
    assert estimate_run_bytes(c, 2) > estimate_run_bytes(c, 1) > 8 * 2**20


def _rows(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(n)))
    return path


def _files_config(tmp_path, data: Path, budget: int, per_category: int):
    return load_config(None, [f"run.state_dir={tmp_path}", f"heldout.per_category={per_category}"], raw={
        "generators": [{"family": "files", "options": {"path": str(data)}, "categories": {"default": {"budget": budget}}}],
        "verifiers": [{"name": "exact_match"}]})


def test_a_dataset_too_small_for_heldout_and_train(tmp_path):
    data = _rows(tmp_path / "three.jsonl", 3)
    with pytest.raises(PreflightError) as e:
        preflight(_files_config(tmp_path, data, budget=4, per_category=4))
    text = "\n".join(e.value.problems)
    assert "heldout.per_category: 4 held-out problem(s) of files/default" in text
    assert "budget: 4 training problem(s)" in text and str(data) in text


def test_heldout_larger_than_a_dataset_gives(tmp_path):
    data = _rows(tmp_path / "forty.jsonl", 40)
    with pytest.raises(PreflightError) as e:
        preflight(_files_config(tmp_path, data, budget=4, per_category=30))
    (line,) = e.value.problems
    assert line.startswith("heldout.per_category: 30") and "lower heldout.per_category to" in line
    preflight(_files_config(tmp_path, data, budget=4, per_category=2))  # what it can give passes


# ---- code_jsonl: duplicates, bytes, gzip ------------------------------------------------------------
ROW = {"prompt": "Write f(x) returning x + 1.", "entry_point": "f", "tests": "def check(candidate):\n"
       "    assert candidate(1) == 2\n", "solution": "def f(x):\n    return x + 1\n"}


def _code(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return str(path)


def test_code_jsonl_same_prompt_with_different_tests_is_reported(tmp_path):
    other = {**ROW, "prompt": "Write  f(x) returning x + 1. ", "tests": "assert f(2) == 3\n"}
    path = _code(tmp_path / "c.jsonl", [json.dumps(ROW).encode(), json.dumps(ROW).encode(), json.dumps(other).encode()])
    with pytest.raises(ValueError) as e:
        GENERATORS.build("code_jsonl", {"path": path, "check_solutions": False}).categories()
    assert f"{path}:3: the prompt of line 1 again, with a different tests" in str(e.value)
    assert ":2:" not in str(e.value)  # an exact repeat is no conflict


def test_code_jsonl_non_utf8_names_file_and_line(tmp_path):
    path = _code(tmp_path / "c.jsonl", [json.dumps(ROW).encode(), b'{"prompt": "caf\xe9"}'])
    with pytest.raises(ValueError) as e:
        GENERATORS.build("code_jsonl", {"path": path}).categories()
    assert f"{path}:2:" in str(e.value) and "not valid UTF-8 (byte 0xe9" in str(e.value)


def test_code_jsonl_gzip(tmp_path):
    plain = json.dumps(ROW).encode() + b"\n"
    hidden = tmp_path / "c.jsonl"
    hidden.write_bytes(gzip.compress(plain))
    with pytest.raises(ValueError, match="gzip-compressed but its name does not end in .gz"):
        GENERATORS.build("code_jsonl", {"path": str(hidden)}).categories()
    named = tmp_path / "c.jsonl.gz"
    named.write_bytes(gzip.compress(plain))
    gen = GENERATORS.build("code_jsonl", {"path": str(named), "check_solutions": False})
    assert gen.categories() == ["code"]


# ---- bounded inputs ------------------------------------------------------------------------------------
def test_a_huge_row_is_refused_unread(tmp_path):
    data = tmp_path / "big.jsonl"
    with data.open("w") as f:
        f.write(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
        f.write(json.dumps({"question": "x" * (9 << 20), "answer": "3"}) + "\n")
    with pytest.raises(ConfigError) as e:
        _files_config(tmp_path, data, budget=1, per_category=1)
    assert f"{data}:line 2" in str(e.value) and "MiB" in str(e.value) and len(str(e.value)) < 2000


def test_a_long_prompt_is_refused_without_tokenising(tmp_path):
    """2 MB of prompt cannot fit 512 tokens: named by its line, with its size in characters."""
    data = _rows(tmp_path / "d.jsonl", 60)
    with data.open("a") as f:
        f.write(json.dumps({"question": "y" * (2 << 20), "answer": "1"}) + "\n")
    with pytest.raises(PreflightError) as e:
        preflight(_files_config(tmp_path, data, budget=2, per_category=2))
    (line,) = [p for p in e.value.problems if p.startswith("model.max_model_len")]
    assert f"{data}:line 61" in line and "2,097,152 characters" in line and len(line) < 1000


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")  # 9**9 = 387 million strings
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    msg = config_error(path=bomb)
    assert "alias" in msg and str(bomb) in msg and len(msg) < 500


def test_a_config_file_of_megabytes_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("run:\n  name: x\n" + "# padding\n" * 200_000)
    assert "MiB" in config_error(path=big)


@pytest.mark.parametrize("override", ["sampling.n=[" + ", ".join(["[1, 2, 3]"] * 5000) + "]",
                                      "nosuch=" + "z" * 100_000,
                                      "run.name=" + "q" * 100_000])
def test_messages_cut_long_values(override):
    msg = config_error(override)
    assert len(msg) < 1500, msg[:300]
