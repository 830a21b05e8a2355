"""A verifier plug-in that hangs cannot hang the run: each batch gets verifiers[].timeout_s, and a
batch past it gets `error` verdicts naming the plug-in and the setting; the verifier's other batches
of the stage are cancelled, so a stage costs one timeout, not one per batch."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

SLEEPY = '''
import time
from verifiers.answer import ExactMatch
from verifiers.base import VERIFIERS


@VERIFIERS.register("sleepy")
class Sleepy(ExactMatch):
    """Exact match that first sleeps (a plug-in waiting on a service that never answers)."""

    def verify(self, problems, samples):
        time.sleep(3600)
        return super().verify(problems, samples)
'''

MAKE = '''
from loop.records import Message, Problem, Reference, Sample
p = Problem(family="arithmetic", category="add", difficulty=1, prompt=[Message(role="user", content="1+1")],
            reference=Reference(answer="2"))
samples = [Sample(id=f"s{i}", problem_id=p.id, round=0, index=i, text="<think>\\nx\\n</think>\\nAnswer: 2",
                  num_tokens=0, finish_reason="stop") for i in range(N)]
'''


def _run(code: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_timeout_is_a_setting_with_a_default():
    from loop.config import ConfigError, load_config

    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert all(v.timeout_s == 300 for v in cfg.verifiers)
    with pytest.raises(ConfigError, match="timeout_s"):
        load_config(ROOT / "configs" / "default.yaml", ["verifiers.0.timeout_s=0"])


def test_a_hanging_batch_in_a_worker_process_comes_back_as_a_timeout(tmp_path):
    plugin = tmp_path / "sleepy.py"
    plugin.write_text(SLEEPY)
    p = _run(MAKE.replace("N)", "2)") + f'''
from loop.cluster.driver import _remote_verify
got = _remote_verify("sleepy", {{}}, [p, p], samples, [{str(plugin)!r}], timeout_s=2)
print(type(got).__name__, "|", got.reason)
''', timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    kind, reason = p.stdout.strip().splitlines()[-1].split(" | ")
    assert kind == "_TimedOut" and "verifiers[].timeout_s of 'sleepy'" in reason and "within 2 s" in reason


@pytest.mark.integration
def test_a_hanging_required_verifier_fails_the_stage_on_real_ray(tmp_path):
    """Real Ray tasks: the first batch times out, the others are cancelled, every sample of the
    verifier is `error`, and the stage fails with a message naming the plug-in and the setting."""
    plugin = tmp_path / "sleepy.py"
    plugin.write_text(SLEEPY)
    p = _run(MAKE.replace("N)", "12)") + f'''
import time
from loop.config import ROOT, load_config
from loop.cluster.driver import Cluster
from loop.run.state import StageFailed
cfg = load_config(None, raw={{"plugins": [{str(plugin)!r}], "run": {{"state_dir": {str(tmp_path)!r}}},
    "generators": [{{"family": "arithmetic", "categories": {{"add": {{"budget": 4}}}}}}],
    "verifiers": [{{"name": "sleepy", "timeout_s": 5}}, {{"name": "format", "required": False}}],
    "cluster": {{"num_cpus": 2, "verify_batch": 2}}}})
cluster = Cluster(cfg)
t0 = time.time()
try:
    cluster.verify({{p.id: p}}, samples)
    print("NO FAILURE")
except StageFailed as e:
    print("failed after", round(time.time() - t0), "|", e)
finally:
    cluster.shutdown()
''', timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    line = p.stdout.strip().splitlines()[-1]
    _, msg = line.split(" | ", 1)  # the plug-in sleeps an hour: the subprocess timeout is the bound
    assert "required verifier 'sleepy' returned `error` on 12 of 12 samples" in msg, line
    assert "verifiers[].timeout_s of 'sleepy'" in msg, line
