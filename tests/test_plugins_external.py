"""Plug-ins from outside the repository: a `plugins:` list (module or .py file), entry points
of an installed distribution (a real dist-info directory, found by importlib.metadata),
where each came from, the errors, and a fresh worker process loading them as Ray's do."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import loop.plugins as plugins
from loop.config import ConfigError, load_config
from loop.plugins import load_plugins
from loop.registry import RegistryError
from tests.conftest import ROOT

PLUGIN_SOURCE = '''
from pydantic import BaseModel, ConfigDict, Field

from generators.base import GENERATORS
from generators.arithmetic import Arithmetic
from policies.base import POLICIES, StoppingPolicy
from verifiers.answer import ExactMatch
from verifiers.base import VERIFIERS


@VERIFIERS.register("{p}_strict")
class Strict(ExactMatch):
    """Exact match, case-sensitive (a user's verifier)."""


@GENERATORS.register("{p}_arith")
class Arith(Arithmetic):
    """Arithmetic under another name (a user's family)."""


@POLICIES.register("{p}_stop_at")
class StopAt(StoppingPolicy):
    """Stop at a held-out accuracy (a user's policy)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        target: float = Field(0.9, gt=0, le=1)

    def should_stop(self, history):
        return history[-1] >= self.options.target, "target"
'''


@pytest.fixture(autouse=True)
def restore_registries():
    """The plug-ins registered here are gone afterwards (other tests compare the registries
    with what a fresh `launch.py list` prints)."""
    import generators  # noqa: F401
    import policies  # noqa: F401
    import verifiers  # noqa: F401
    from generators.base import GENERATORS
    from policies.base import POLICIES
    from verifiers.base import VERIFIERS

    regs = (VERIFIERS, GENERATORS, POLICIES)
    saved = [(dict(r._items), dict(r._sources)) for r in regs]
    yield
    for r, (items, sources) in zip(regs, saved):
        r._items.clear()
        r._items.update(items)
        r._sources.clear()
        r._sources.update(sources)


def write_plugin(path: Path, prefix: str) -> Path:
    path.write_text(PLUGIN_SOURCE.replace("{p}", prefix))
    return path


def config(prefix: str, plugins_list: list[str]) -> dict:
    return {"plugins": plugins_list,
            "generators": [{"family": f"{prefix}_arith", "categories": {"add": {"budget": 4}}}],
            "verifiers": [{"name": f"{prefix}_strict"}],
            "policies": {"stopping": {"name": f"{prefix}_stop_at", "options": {"target": 0.5}}}}


def test_plugins_list_with_a_file(tmp_path):
    from generators.base import GENERATORS
    from policies.base import POLICIES
    from verifiers.base import VERIFIERS

    f = write_plugin(tmp_path / "my_plugins.py", "extfile")
    cfg = load_config(None, raw=config("extfile", [str(f)]))
    assert cfg.plugins == [str(f.resolve())]
    for reg, name in ((VERIFIERS, "extfile_strict"), (GENERATORS, "extfile_arith"), (POLICIES, "extfile_stop_at")):
        assert reg.source(name) == f"plugins: {f.resolve()}"
    assert VERIFIERS.source("exact_match") == "built-in"
    load_config(None, raw=config("extfile", [str(f)]))  # a second config with the same file: no clash


def test_plugins_list_with_a_module(tmp_path, monkeypatch):
    from verifiers.base import VERIFIERS

    (tmp_path / "extpkg").mkdir()
    (tmp_path / "extpkg" / "__init__.py").write_text("")
    write_plugin(tmp_path / "extpkg" / "mod.py", "extmod")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(None, raw=config("extmod", ["extpkg.mod"]))
    assert cfg.policies.stopping.name == "extmod_stop_at"
    assert VERIFIERS.source("extmod_strict") == "plugins: extpkg.mod"


def test_plugin_errors_name_the_plugin_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"plugins: no_such_module_xyz: cannot import 'no_such_module_xyz'.*PYTHONPATH"):
        load_config(None, raw=config("x", ["no_such_module_xyz"]))
    with pytest.raises(ConfigError, match=r"no such file .*missing\.py"):
        load_config(None, raw=config("x", [str(tmp_path / "missing.py")]))
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(ConfigError, match=r"plugins: .*broken\.py failed to import: RuntimeError: boom at import"):
        load_config(None, raw=config("x", [str(broken)]))
    clash = tmp_path / "clash.py"
    clash.write_text("from verifiers.base import VERIFIERS\nfrom verifiers.answer import ExactMatch\n\n\n"
                     "@VERIFIERS.register('exact_match')\nclass Mine(ExactMatch):\n    pass\n")
    with pytest.raises(RegistryError, match=r"'exact_match' is already registered by verifiers\.answer\.ExactMatch "
                                            r"\(built-in\); pick another name"):
        load_plugins([str(clash)])


def make_distribution(site: Path, prefix: str) -> None:
    """An installed distribution as pip leaves it: the package and its dist-info with entry points."""
    (site / "ext_dist_pkg").mkdir(parents=True)
    (site / "ext_dist_pkg" / "__init__.py").write_text("")
    write_plugin(site / "ext_dist_pkg" / "registered.py", prefix)
    (site / "ext_dist_pkg" / "plain.py").write_text(textwrap.dedent('''
        from verifiers.answer import ExactMatch


        class Plain(ExactMatch):
            """A verifier class with no decorator: the entry point's name registers it."""
    '''))
    info = site / "ext_dist_pkg-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ext-dist-pkg\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(
        "[reasoning_loop.verifiers]\n"
        f"{prefix}_plain = ext_dist_pkg.plain:Plain\n\n"
        "[reasoning_loop.generators]\n"
        "all_of_them = ext_dist_pkg.registered\n")


def test_entry_points_of_an_installed_distribution(tmp_path, monkeypatch):
    from generators.base import GENERATORS
    from verifiers.base import VERIFIERS

    make_distribution(tmp_path / "site", "extep")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    load_plugins()
    assert VERIFIERS.get("extep_plain").__module__ == "ext_dist_pkg.plain"
    assert VERIFIERS.source("extep_plain") == (
        "entry point reasoning_loop.verifiers:extep_plain = ext_dist_pkg.plain:Plain (ext-dist-pkg 0.3)")
    assert GENERATORS.source("extep_arith") == (
        "entry point reasoning_loop.generators:all_of_them = ext_dist_pkg.registered (ext-dist-pkg 0.3)")
    # no `plugins:` line is needed in the config
    cfg = load_config(None, raw=config("extep", []))
    assert cfg.verifiers[0].name == "extep_strict"


def cli(*args: str, env_path: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_path:
        env["PYTHONPATH"] = env_path
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def test_list_shows_where_each_plugin_came_from(tmp_path):
    make_distribution(tmp_path / "site", "extcli")
    f = write_plugin(tmp_path / "more.py", "extclifile")
    p = cli("list", "--plugin", str(f), env_path=str(tmp_path / "site"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "extcli_plain" in out and "from: entry point reasoning_loop.verifiers:extcli_plain" in out
    assert "extclifile_strict" in out and f"from: plugins: {f}" in out
    assert "exact_match" in out and "from: built-in" in out
    bad = cli("list", "--plugin", "no_such_module_xyz", cwd=tmp_path)
    assert bad.returncode == 2 and "cannot import 'no_such_module_xyz'" in bad.stderr


def test_a_fresh_worker_process_loads_the_plugins(tmp_path):
    """Ray's verification tasks build verifiers by name in another process: `_remote_verify`
    gets the config's plugins and loads them there."""
    f = write_plugin(tmp_path / "worker_plugins.py", "extworker")
    code = textwrap.dedent(f'''
        from loop.cluster.driver import _remote_verify
        from loop.records import Message, Problem, Reference, Sample
        p = Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content="1+1")],
                    reference=Reference(answer="2"))
        s = [Sample(id=f"s{{i}}", problem_id=p.id, round=0, index=i, text=t, num_tokens=0, finish_reason="stop")
             for i, t in enumerate(["<think>\\nx\\n</think>\\nAnswer: 2", "<think>\\nx\\n</think>\\nAnswer: 3"])]
        print([v.outcome for v in _remote_verify("extworker_strict", {{}}, [p, p], s, [{str(f)!r}])])
    ''')
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == "['pass', 'fail']"
