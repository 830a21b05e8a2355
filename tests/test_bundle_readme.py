"""Every command and code block of a real bundle's README, run as written from a directory outside
the project, on a copy of the bundle far from its run, the way a user hands it to their tools.

One real 1-round run, exported; the bundle copied away; `BUNDLE` set as the README says; `python`
and `vllm` the project's environment; verl and OpenRLHF from .venv/extras (`make extras`). Each
block is recognised by the tool it calls and run:

  TRL       `train_grpo.py`, verbatim but for `--max-steps 200` -> 2
  vLLM      the Python snippet as a script; the OpenAI-compatible server (`vllm serve`'s module) with
            one chat request by the README's curl (the port moved to a free one)
  verl      its main_ppo arguments, as bash expands them, composed by verl's hydra config; verl's
            RLHFDataset, custom-reward loader and naive reward manager on them (training needs GPUs)
  OpenRLHF  the LoRA combiner verbatim; train_ppo_ray's flags through OpenRLHF's own parser,
            PromptDataset and reward-file loader (training needs GPUs)

A block this test does not know fails it: a new README section must come with its check.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_export_openrlhf import OPENRLHF_CHECK, check_openrlhf_result, readme_flags
from tests.test_export_rl import bundle  # noqa: F401 - the module's real exported run (fixture)
from tests.test_export_verl import (
    VERL_CHECK,
    check_verl_result,
    code_blocks,
    extras_env,
    need_extra,
    readme_overrides,
    run_py,
)

pytestmark = pytest.mark.integration


def bash(script: str, cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, f"{script}\nexited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_ask(serve: str, ask: str, cwd: Path, env: dict[str, str]) -> dict:
    port = str(free_port())
    serve, ask = serve.replace("8000", port), ask.replace("8000", port)
    log = (cwd / "serve.log").open("w")
    server = subprocess.Popen(["bash", "-c", serve], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.time() + 900
        while True:
            assert server.poll() is None, "vllm serve exited:\n" + (cwd / "serve.log").read_text()[-6000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "vllm serve did not listen in 15 minutes:\n" + \
                (cwd / "serve.log").read_text()[-6000:]
            time.sleep(3)
        return json.loads(bash(ask, cwd, env, timeout=300).stdout)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
        log.close()


def test_every_readme_block_runs_as_written_from_outside_the_project(bundle, tmp_path):  # noqa: F811
    need_extra("verl")
    need_extra("openrlhf")
    copy = tmp_path / "handed" / "over" / "bundle"
    shutil.copytree(bundle, copy)
    work = tmp_path / "work"
    work.mkdir()
    env = extras_env(copy)
    blocks = code_blocks((copy / "README.md").read_text())
    assert len(blocks) >= 7, blocks
    serve = ask = None
    done = []
    for lang, text in blocks:
        if "train_grpo.py" in text:
            assert "--max-steps 200" in text
            bash(text.replace("--max-steps 200", "--max-steps 2"), work, env)
            assert (work / "grpo-out" / "adapter_model.safetensors").is_file()
            done.append("trl")
        elif lang == "python" and "from vllm import LLM" in text:
            (work / "vllm_snippet.py").write_text(text)
            p = subprocess.run([sys.executable, "vllm_snippet.py"], cwd=work, env=env, capture_output=True, text=True,
                               timeout=900)
            assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
            outs = [json.loads(line) for line in p.stdout.splitlines() if line.startswith('"')]
            assert len(outs) == 8 and all(isinstance(o, str) for o in outs), p.stdout[-2000:]
            assert sum("Answer:" in o for o in outs) >= 4, outs  # the adapter answers in the house format
            done.append("vllm")
        elif "vllm.entrypoints.openai.api_server" in text and "--enable-lora --lora-modules bundle=" in text:
            serve = text
        elif text.startswith("curl "):
            ask = text
        elif "verl.trainer.main_ppo" in text:
            overrides = readme_overrides(copy, work, env)
            out = run_py(VERL_CHECK, [str(copy), json.dumps(overrides)], work, env)
            check_verl_result(out, copy, str((copy / "base").resolve()))
            done.append("verl")
        elif "openrlhf.cli.lora_combiner" in text:
            bash(text, work, env)
            assert (work / "bundle-merged" / "config.json").is_file()
            done.append("openrlhf-merge")
        elif "openrlhf.cli.train_ppo_ray" in text:
            flags = readme_flags(copy, work, env)
            model = flags[flags.index("--actor.model_name_or_path") + 1]
            assert (work / model / "config.json").is_file(), "the merge block must come first"
            out = run_py(OPENRLHF_CHECK, [str(copy), str(work / model), json.dumps(flags)], work, env)
            check_openrlhf_result(out, copy)
            done.append("openrlhf")
        else:
            pytest.fail(f"a README block this test does not know how to run ({lang}):\n{text}")
    assert serve and ask, "the README lost its vllm serve / curl blocks"
    reply = serve_and_ask(serve, ask, work, env)
    assert reply["model"] == "bundle" and isinstance(reply["choices"][0]["message"]["content"], str), reply
    done.append("vllm-serve")
    assert done == ["trl", "vllm", "verl", "openrlhf-merge", "openrlhf", "vllm-serve"], done
