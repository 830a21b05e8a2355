"""The layout's rules, checked on every import statement in the product code (function-level ones too):
plug-ins import only `loop.records` and `loop.registry` from `loop`; no two groups of modules import each
other; the ground floor (`records`, `registry`, `loop/run/`) imports nothing above it."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("loop", "verifiers", "generators", "policies")

# Group of a module, lowest floor first. A module may import its own group and the floors below it.
# `models` (the tiny model, shape models) sits just above the plug-ins: the tiny model's warm start
# draws the generators' problems.
GROUPS = {
    "ground": ("loop.records", "loop.registry", "loop.run"),
    "plugins": ("verifiers", "generators", "policies"),
    "config": ("loop.config", "loop.plugins"),
    "kernels": ("loop.kernels",),
    "cluster": ("loop.cluster",),
    "spine": ("loop.controller", "loop.steps", "loop.analysis", "loop.taxonomy", "loop.preflight",
              "loop.verifier_data"),
    "verbs": ("loop.export", "loop.report", "loop.runner", "loop.catalog", "loop.export_verl", "launch"),
    "models": ("loop.models",),
}
ORDER = ["ground", "plugins", "models", "config", "kernels", "cluster", "spine", "verbs"]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def group_of(mod: str) -> str | None:
    best = None
    for group, prefixes in GROUPS.items():
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (group, p)
    if best is None and mod == "loop":
        return "ground"  # the package map: a docstring only
    return best[0] if best else None


def imports_of(path: Path) -> set[str]:
    """Every project module this file imports, at any depth of the code (inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from loop import steps` names the module loop.steps; `from loop.x import y` names loop.x
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in PACKAGES or m == "launch"}


def resolve(mod: str, known: set[str]) -> str | None:
    """The longest known module that `mod` names (drops a trailing attribute name)."""
    while mod and mod not in known:
        mod = mod.rpartition(".")[0]
    return mod or None


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "assets" not in p.parts]
    files.append(ROOT / "launch.py")
    known = {module_name(p) for p in files}
    edges = {}
    for p in files:
        me = module_name(p)
        edges[me] = {t for m in imports_of(p) if (t := resolve(m, known)) and t != me}
    return edges


def test_every_product_module_has_a_group():
    assert not [m for m in graph() if group_of(m) is None]


def test_plugins_import_only_the_vocabulary_from_loop():
    bad = sorted(f"{m} imports {t}" for m, ts in graph().items() if group_of(m) == "plugins"
                 for t in ts if t.startswith("loop") and t not in ("loop.records", "loop.registry"))
    assert not bad, "plug-ins may import only loop.records and loop.registry from loop:\n" + "\n".join(bad)


def test_imports_go_down_the_floors():
    bad = []
    for m, ts in graph().items():
        g = group_of(m)
        for t in ts:
            h = group_of(t)
            if ORDER.index(h) > ORDER.index(g):
                bad.append(f"{m} ({g}) imports {t} ({h})")
    assert not bad, f"imports must go down ({' < '.join(ORDER)}):\n" + "\n".join(sorted(bad))


def test_no_two_files_import_each_other():
    g = graph()
    circles = sorted({tuple(sorted((a, b))) for a, ts in g.items() for b in ts if a in g.get(b, set())})
    assert not circles, f"files that import each other: {circles}"
