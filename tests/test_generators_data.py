"""Data-backed families: reasoning_gym and files (JSONL / Parquet / saved datasets)."""
from __future__ import annotations

import json

import pytest

from generators import GENERATORS, draw
from loop.records import Problem, dedup, split_of
from loop.registry import RegistryError


def _generic_checks(fam: str, raw: dict, cat: str, d: int) -> None:
    gen = GENERATORS.build(fam, raw)
    a, b = gen.generate(cat, d, 8, seed=4), GENERATORS.build(fam, raw).generate(cat, d, 8, seed=4)
    assert [p.model_dump() for p in a] == [p.model_dump() for p in b]
    for p in a:
        assert Problem.model_validate({**p.model_dump(), "id": ""}).id == p.id
        assert Problem.model_validate_json(p.model_dump_json()) == p
    train = draw(gen, cat, d, 10, seed=1, split="train", heldout_fraction=0.3)
    held = draw(gen, cat, d, 4, seed=1, split="heldout", heldout_fraction=0.3)
    assert train and held
    assert not {p.id for p in train} & {p.id for p in held}
    assert all(split_of(p.id, 0.3) == "train" for p in train) and all(p.is_heldout(0.3) for p in held)
    assert len(dedup(a + b)) == len(dedup(a))


# ---- reasoning_gym

RG = {"datasets": {"chain_sum": {}, "basic_arithmetic": {"max_terms": 3}},
      "difficulty_params": {"chain_sum": {1: {"min_terms": 2, "max_terms": 2}, 2: {"min_terms": 5, "max_terms": 5}}}}


def test_reasoning_gym_generic():
    _generic_checks("reasoning_gym", RG, "chain_sum", 2)
    _generic_checks("reasoning_gym", RG, "basic_arithmetic", 1)


def test_reasoning_gym_contract_and_difficulty():
    import reasoning_gym

    gen = GENERATORS.build("reasoning_gym", RG)
    assert gen.categories() == ["chain_sum", "basic_arithmetic"]
    assert gen.difficulties("chain_sum") == (1, 2) and gen.difficulties("basic_arithmetic") == (1, 1)
    for d, terms in ((1, 2), (2, 5)):
        for p in gen.generate("chain_sum", d, 5, seed=0):
            p = Problem.model_validate_json(p.model_dump_json())   # as a verifier reads it from disk
            entry = p.metadata["rg_entry"]
            assert p.metadata["rg_dataset"] == "chain_sum" and entry["metadata"]["num_terms"] == terms
            assert p.reference.answer == entry["answer"]
            assert p.prompt[0].content.startswith(entry["question"])
            assert p.prompt[0].content.endswith("Answer: <answer>'.")
            score = reasoning_gym.get_score_answer_fn("chain_sum")
            assert score(p.reference.answer, entry) == 1.0 and score("nonsense", entry) == 0.0
    with pytest.raises(ValueError, match=r"allowed difficulties: 1\.\.2"):
        gen.generate("chain_sum", 3, 1, 0)
    with pytest.raises(ValueError, match="allowed categories: chain_sum, basic_arithmetic"):
        gen.generate("leg_counting", 1, 1, 0)


def test_reasoning_gym_bad_options():
    with pytest.raises(RegistryError, match="some valid ones: .*chain_sum"):
        GENERATORS.build("reasoning_gym", {"datasets": {"no_such_set": {}}})
    with pytest.raises(ValueError, match="unknown option.*bogus.*its options are: .*min_terms"):
        GENERATORS.build("reasoning_gym", {"datasets": {"chain_sum": {"bogus": 1}}})
    with pytest.raises(ValueError, match="at difficulty 2: invalid options"):
        GENERATORS.build("reasoning_gym", {"datasets": {"chain_sum": {}},
                                           "difficulty_params": {"chain_sum": {1: {}, 2: {"min_terms": 9, "max_terms": 2}}}})
    with pytest.raises(RegistryError, match="consecutive"):
        GENERATORS.build("reasoning_gym", {"difficulty_params": {"chain_sum": {1: {}, 3: {}}}})
    with pytest.raises(ValueError, match="not in datasets"):
        GENERATORS.build("reasoning_gym", {"difficulty_params": {"leg_counting": {1: {}}}})


# ---- files

def _rows(n: int = 30) -> list[dict]:
    return [{"q": f"What is {i}+{i}?", "a": 2 * i, "kind": "odd" if i % 2 else "even", "lvl": i % 3,
             "why": f"<think>\n{i}+{i}={2 * i}\n</think>\nAnswer: {2 * i}", "tag": f"t{i}"} for i in range(n)]


COLS = {"prompt": "q", "answer": "a", "category": "kind", "difficulty": "lvl", "chain": "why"}


def _jsonl(path, rows, extra_lines=()):
    path.write_text("\n".join([json.dumps(r) for r in rows] + list(extra_lines)) + "\n")
    return str(path)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf_disk"])
def test_files_formats_and_mapping(tmp_path, fmt):
    rows = _rows()
    if fmt == "jsonl":
        path = _jsonl(tmp_path / "d.jsonl", rows)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        path = str(tmp_path / "d.parquet")
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets
        path = str(tmp_path / "saved")
        datasets.Dataset.from_list(rows).save_to_disk(path)
    raw = {"path": path, "columns": COLS, "metadata_columns": ["tag"]}
    gen = GENERATORS.build("files", raw)
    assert gen.categories() == ["even", "odd"] and gen.difficulties("even") == (0, 2)
    picked = gen.generate("even", 2, 100, seed=0)
    assert len(picked) == 5   # i in 0..29, even and i % 3 == 2: 2, 8, 14, 20, 26
    for p in picked:
        i = int(p.metadata["tag"][1:])
        assert i % 2 == 0 and i % 3 == 2 and p.reference.answer == str(2 * i)
        assert p.prompt[0].content == f"What is {i}+{i}?" and p.reference.chain.endswith(f"Answer: {2 * i}")
        assert p.metadata["source"].startswith(path)
    _generic_checks("files", {"path": path, "columns": {"prompt": "q", "answer": "a"}}, "default", 1)


def test_files_default_category_messages_and_selection(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"q{i}"}],
             "answer": str(i)} for i in range(12)]
    path = _jsonl(tmp_path / "chat.jsonl", rows)
    gen = GENERATORS.build("files", {"path": path, "columns": {"prompt": "messages"}, "category": "chat"})
    assert gen.categories() == ["chat"] and gen.difficulties("chat") == (1, 1)
    a = gen.generate("chat", 1, 5, seed=1)
    assert [m.role for m in a[0].prompt] == ["system", "user"]
    assert len(a) == 5 and len({p.id for p in a}) == 5
    assert [p.id for p in gen.generate("chat", 1, 5, seed=2)] != [p.id for p in a]
    assert len(gen.generate("chat", 1, 50, seed=1)) == 12   # a small file gives what it has
    with pytest.raises(ValueError, match="allowed difficulties: 1..1"):
        gen.generate("chat", 2, 1, 0)


def test_files_malformed_rows_named_by_line(tmp_path):
    good = _rows(3)
    path = _jsonl(tmp_path / "bad.jsonl", good, [
        "{not json",
        "",
        json.dumps({"q": "no answer", "kind": "odd", "lvl": 0}),
        json.dumps({"q": ["not", "messages"], "a": "1", "kind": "odd", "lvl": 0}),
        json.dumps({"q": "x", "a": "1", "kind": "odd", "lvl": "hard"}),
        json.dumps({"q": "x", "a": {"v": 1}, "kind": "odd", "lvl": 1}),
        "[1, 2]",
    ])
    with pytest.raises(ValueError) as e:
        GENERATORS.build("files", {"path": path, "columns": COLS})
    msg = str(e.value)
    assert "6 malformed row(s) in " + path in msg
    assert f"{path}:line 4: not valid JSON" in msg
    assert f"{path}:line 6: missing column 'a'" in msg
    assert f"{path}:line 7: column 'q' is not a list of {{role, content}} messages" in msg
    assert f"{path}:line 8: column 'lvl' should be an integer >= 0" in msg
    assert f"{path}:line 9: column 'a' should be a string, got dict" in msg
    assert f"{path}:line 10: expected a JSON object" in msg


def test_files_error_list_is_capped_and_file_errors(tmp_path):
    path = _jsonl(tmp_path / "many.jsonl", [], ["{oops"] * 25)
    with pytest.raises(ValueError, match=r"(?s)25 malformed.*line 10: not valid JSON.*and 15 more") as e:
        GENERATORS.build("files", {"path": path})
    assert "line 11:" not in str(e.value)
    with pytest.raises(ValueError, match="does not exist"):
        GENERATORS.build("files", {"path": str(tmp_path / "missing.jsonl")})
    (tmp_path / "d.csv").write_text("q,a\n")
    with pytest.raises(ValueError, match="set format to one of jsonl, parquet, hf_disk"):
        GENERATORS.build("files", {"path": str(tmp_path / "d.csv")})
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no rows"):
        GENERATORS.build("files", {"path": str(tmp_path / "empty.jsonl")})
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="cannot read as Parquet"):
        GENERATORS.build("files", {"path": str(tmp_path / "x.parquet")})
    with pytest.raises(RegistryError, match="columns.bogus"):
        GENERATORS.build("files", {"path": path, "columns": {"bogus": "x"}})
