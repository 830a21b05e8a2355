"""Preflight: everything knowable from the config and the files, checked before Ray or
vLLM start, and every problem reported at once.

    preflight(cfg, stop_after=..., adapter=..., run=...)   # raises PreflightError

Each problem is one line: the field or file, what is wrong, and what would fix it. The
config's own validation (types, ranges, plug-in names and options, data rows) has already
run in `load_config`; this adds what needs the filesystem, the tokenizer or the network.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from loop.cluster.prompt_tokens import token_counter
from loop.config import Config, ConfigError
from loop.run.state import STAGES

if TYPE_CHECKING:
    from loop.records import Problem
    from loop.run.state import RunDir

log = logging.getLogger("loop")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks
ADDRESS_TIMEOUT_S = 5.0
MAX_CHARS_PER_TOKEN = 32  # a prompt longer than this many characters a token cannot fit; it is not tokenised


class PreflightError(ConfigError):
    """Problems found before anything expensive started; str() lists them, one a line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        n = len(problems)
        super().__init__(f"preflight found {n} problem{'s' * (n != 1)} (nothing was started):\n  - "
                         + "\n  - ".join(problems))


def preflight(cfg: Config, *, stop_after: str | None = None, adapter: str | None = None,
              run: RunDir | None = None, new_run: bool = True, check_prompts: bool = True,
              allow_no_tracker: bool = False) -> None:
    """new_run: a run directory will be created under run.state_dir (not for `eval`);
    run: the run being resumed (its finished stages' files are checked); allow_no_tracker: a tracker
    of run.report_to that cannot start is a warning, not a problem."""
    problems: list[str] = []
    check_trackers(cfg, problems, allow_no_tracker)
    model_ok = check_model(cfg, problems)
    check_lora(cfg, problems)
    if adapter is not None:
        check_adapter(Path(adapter), "--adapter", cfg, problems)
    if stop_after is not None:
        check_stop_after(stop_after, cfg.loop.rounds, problems, cfg.learned_verifier.enabled)
    if new_run and run is None:
        check_state_dir(Path(cfg.run.state_dir), problems)
    if run is not None:
        check_run_files(run, problems)
    check_devices(cfg, problems)
    check_memory(cfg, problems)
    if model_ok:
        check_model_limits(cfg, problems)
        check_gpu_budget(cfg, problems)
    if cfg.cluster.address:
        check_address(cfg.cluster.address, problems)
    if check_prompts:
        heldout, train = _round0_problems(cfg)
        check_draws(cfg, heldout, train, problems)
        if model_ok:
            check_prompt_lengths(cfg, problems, heldout + train)
    if (new_run or run is not None) and model_ok:
        check_disk(cfg, run.path if run is not None else Path(cfg.run.state_dir), problems, run)
    if problems:
        raise PreflightError(problems)


def check_trackers(cfg: Config, problems: list[str], allow_missing: bool = False) -> None:
    """Every tracker of run.report_to imports here and, when it logs to a server, has a way in."""
    from loop.run.trackers import problem

    for name in cfg.run.report_to:
        why = problem(name)
        if why is not None and not allow_missing:  # allowed: the run warns when it opens its trackers
            problems.append(why + "; or pass --allow-no-tracker to run without it")


# ---- model and adapters --------------------------------------------------------------
def check_model(cfg: Config, problems: list[str]) -> bool:
    m = cfg.model
    if m.path.startswith("builtin:") and m.path != "builtin:tiny-qwen3":
        problems.append(f"model.path: unknown builtin {m.path!r}; the only builtin is builtin:tiny-qwen3")
        return False
    from loop.models.hub import HubModelError, is_hub_id, resolve_model

    if is_hub_id(m.path):
        try:
            hub = resolve_model(m.path)
        except HubModelError as e:
            problems.append(str(e))
            return False
        log.info("model.path: %s is commit %s, %s", m.path, hub.revision[:12],
                 "found in the local Hugging Face cache" if hub.how == "cache" else "downloaded into the HF cache")
        p = Path(hub.path)
    else:
        p = Path(m.resolved_path()).expanduser()
    if not p.exists():
        problems.append(f"model.path: {m.path} does not exist; set it to a local Hugging Face model directory "
                        "(with config.json and tokenizer files), a hub id (org/name or org/name@revision) or "
                        "builtin:tiny-qwen3")
        return False
    if not p.is_dir():
        problems.append(f"model.path: {m.path} is a file, not a model directory; give the directory that holds "
                        "config.json, the weights and the tokenizer")
        return False
    ok = True
    cfg_file = p / "config.json"
    try:
        mc = json.loads(cfg_file.read_text(encoding="utf-8"))
        if not isinstance(mc, dict) or "model_type" not in mc:
            problems.append(f"model.path: {cfg_file} has no model_type; it is not a Hugging Face model config")
            ok = False
        else:
            limit = mc.get("max_position_embeddings")
            if isinstance(limit, int) and m.max_model_len > limit:
                problems.append(f"model.max_model_len: {m.max_model_len} is more than the model's "
                                f"max_position_embeddings ({limit}, {cfg_file}); set model.max_model_len <= {limit}")
    except FileNotFoundError:
        problems.append(f"model.path: {p} has no config.json, so it is not a Hugging Face model directory; "
                        "point it at the directory written by save_pretrained")
        ok = False
    except (OSError, UnicodeDecodeError, ValueError) as e:
        problems.append(f"model.path: {cfg_file} cannot be read as JSON ({e}); restore the model's config.json")
        ok = False
    if not any((p / f).exists() for f in TOKENIZER_FILES):
        problems.append(f"model.path: {p} has no tokenizer ({', '.join(TOKENIZER_FILES)}); save the tokenizer "
                        "next to the model (tokenizer.save_pretrained)")
        ok = False
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")) and not any(p.glob("*.safetensors.index.json")):
        problems.append(f"model.path: {p} has no weights (*.safetensors or *.bin); save the model with "
                        "model.save_pretrained into that directory")
        ok = False
    return ok


def check_lora(cfg: Config, problems: list[str]) -> None:
    rank = cfg.cluster.sampler.max_lora_rank
    if rank not in VLLM_LORA_RANKS:
        allowed = ", ".join(map(str, VLLM_LORA_RANKS))
        problems.append(f"cluster.sampler.max_lora_rank: {rank} is not a rank vLLM accepts; allowed: {allowed}")
    if cfg.lora.r > rank:
        problems.append(f"lora.r: {cfg.lora.r} is larger than cluster.sampler.max_lora_rank ({rank}), so vLLM could "
                        f"not load the trained adapters; lower lora.r or raise cluster.sampler.max_lora_rank")
    lv = cfg.learned_verifier
    if lv.enabled and lv.lora_r is not None and lv.lora_r > rank:  # null follows lora.r, checked above
        problems.append(f"learned_verifier.lora_r: {lv.lora_r} is larger than "
                        f"cluster.sampler.max_lora_rank ({rank}), so vLLM could not load the verifier adapter on a "
                        "GPU; lower learned_verifier.lora_r or raise cluster.sampler.max_lora_rank")


def check_adapter(path: Path, field: str, cfg: Config, problems: list[str]) -> None:
    if not path.exists():
        problems.append(f"{field}: {path} does not exist; give a PEFT adapter directory, e.g. "
                        "state/runs/<id>/round-002/adapter")
        return
    if not path.is_dir():
        problems.append(f"{field}: {path} is a file; give the PEFT adapter directory that holds adapter_config.json")
        return
    conf = path / "adapter_config.json"
    try:
        ac = json.loads(conf.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{field}: {path} has no adapter_config.json, so it is not a PEFT adapter; give a directory "
                        "written by peft's save_pretrained (e.g. state/runs/<id>/round-002/adapter)")
        return
    except (OSError, UnicodeDecodeError, ValueError) as e:
        problems.append(f"{field}: {conf} cannot be read as JSON ({e}); the adapter is damaged")
        return
    if not isinstance(ac, dict) or ac.get("peft_type") not in (None, "LORA"):
        problems.append(f"{field}: {conf} is not a LoRA adapter config (peft_type "
                        f"{ac.get('peft_type') if isinstance(ac, dict) else '?'!r}); only LoRA adapters can be served")
        return
    if not any((path / w).exists() for w in ADAPTER_WEIGHTS):
        problems.append(f"{field}: {path} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}); the adapter "
                        "was not saved completely")
    r = ac.get("r")
    if isinstance(r, int) and r > cfg.cluster.sampler.max_lora_rank:
        problems.append(f"{field}: the adapter's rank {r} is larger than cluster.sampler.max_lora_rank "
                        f"({cfg.cluster.sampler.max_lora_rank}); add --set cluster.sampler.max_lora_rank=<a vLLM "
                        f"rank >= {r}>")


def _model_config(cfg: Config) -> dict:
    try:
        mc = json.loads((Path(cfg.model.resolved_path()).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return mc if isinstance(mc, dict) else {}


def check_model_limits(cfg: Config, problems: list[str]) -> None:
    """Lengths the model cannot take: found here, not by the trainer after the first round."""
    limit = _model_config(cfg).get("max_position_embeddings")
    if isinstance(limit, int) and cfg.training.max_seq_len > limit:
        problems.append(f"training.max_seq_len: {cfg.training.max_seq_len} is more than the model's "
                        f"max_position_embeddings ({limit}); set training.max_seq_len <= {limit}")


def check_gpu_budget(cfg: Config, problems: list[str]) -> None:
    """A cluster.gpu_memory_budget_gib too small for the model's weights, its KV cache and the
    trainer: found here, with what would fit, not as an out-of-memory error inside vLLM."""
    budget = cfg.cluster.gpu_memory_budget_gib
    if budget is None:
        return
    from loop.cluster.gpu_memory import budget_problems, model_size

    try:
        size = model_size(Path(cfg.model.resolved_path()).expanduser())
    except (OSError, ValueError, KeyError, TypeError) as e:
        problems.append(f"cluster.gpu_memory_budget_gib: the model's config.json does not say its shape "
                        f"({type(e).__name__}: {e}), so the budget cannot be checked; remove the budget or use a "
                        "model directory with a complete config.json")
        return
    problems.extend(budget_problems(size, budget, cfg.serving_quantization() == "bitsandbytes",
                                    cfg.model.max_model_len))


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (empty where there is none)."""
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def check_memory(cfg: Config, problems: list[str]) -> None:
    """On the CPU each sampler replica reserves its KV cache (cluster.sampler.kv_cache_gib) in this
    machine's memory up front; more than the machine has fails inside vLLM after its start."""
    s = cfg.cluster.sampler
    if cfg.cluster.address or s.num_gpus > 0:
        return  # a remote cluster's memory is not visible here; on a GPU the cache is gpu_memory_utilization
    total = _meminfo().get("MemTotal")
    if not total:
        return
    want = s.kv_cache_gib * s.num_actors
    if want * 2**30 >= total:
        per = f" ({s.num_actors} replicas x {s.kv_cache_gib})" if s.num_actors > 1 else ""
        problems.append(f"cluster.sampler.kv_cache_gib: {want} GiB of KV cache{per} is more than this machine's "
                        f"memory ({total / 2**30:.1f} GiB in all); set it to a few GiB (1 is plenty for the tiny "
                        "model), below what the machine has free")


def _lora_bytes(cfg: Config) -> int:
    """The size of one saved adapter (fp32), from the model's shape; 0 if the shape is unknown."""
    mc = _model_config(cfg)
    h, inter, layers = mc.get("hidden_size"), mc.get("intermediate_size"), mc.get("num_hidden_layers")
    if not all(isinstance(x, int) for x in (h, inter, layers)):
        return 0
    heads = mc.get("num_attention_heads") or 1
    kv = mc.get("num_key_value_heads") or heads
    hd = mc.get("head_dim") or h // heads
    # q, k, v, o, gate, up, down: r * (in + out) each (target_modules is at most these)
    per_layer = (h + heads * hd) + 2 * (h + kv * hd) + (heads * hd + h) + 2 * (h + inter) + (inter + h)
    return 4 * cfg.lora.r * per_layer * layers


def estimate_run_bytes(cfg: Config, rounds: int) -> int:
    """What `rounds` rounds write at most, roughly: samples with their text, verdicts and
    analysis (a few copies of each chain), held-out evaluations, and each round's adapter
    (with the trainer's checkpoint beside it)."""
    chain = cfg.sampling.max_tokens * 4 + 600  # characters of a chain in JSON, with its record
    cats = len(cfg.category_keys())
    per_round = (cfg.total_budget() * (2000 + cfg.sampling.n * chain * (3 + len(cfg.verifiers)))
                 + cats * cfg.heldout.per_category * chain * 3 + 3 * _lora_bytes(cfg))
    return 8 * 2**20 + rounds * per_round + cats * cfg.heldout.per_category * chain * 3


def check_disk(cfg: Config, where: Path, problems: list[str], run: RunDir | None = None) -> None:
    """Enough free space where the run writes for what it will write (a full disk mid-run
    leaves a stage failed at an OSError)."""
    import shutil

    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    rounds = cfg.loop.rounds - (run.manifest.get("rounds_completed", 0) if run is not None else 0)
    need = estimate_run_bytes(cfg, max(rounds, 0))
    if free < need:
        field = f"{where} (the run)" if run is not None else f"run.state_dir ({where})"
        problems.append(f"{field}: {free / 2**20:.1f} MiB free on its filesystem, but {max(rounds, 0)} round(s) "
                        f"of this config write about {need / 2**20:.0f} MiB (chains, verdicts, evaluations, adapters); "
                        "free space there, choose another run.state_dir, or run fewer/smaller rounds")


# ---- the run ----------------------------------------------------------------------------
def stage_names(rounds: int, verifier: bool = False) -> list[str]:
    """verifier: the learned verifier's stage exists (learned_verifier.enabled)."""
    return ["setup/heldout", "baseline"] + [f"round-{r}/{s}" for r in range(rounds) for s in STAGES
                                            if verifier or s != "verifier"]


def check_stop_after(stage: str, rounds: int, problems: list[str], verifier: bool = False) -> None:
    names = stage_names(rounds, verifier)
    if stage in names:
        return
    import difflib

    close = difflib.get_close_matches(stage, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    problems.append(f"--stop-after: {stage!r} is not a stage of this run{hint}; stages: setup/heldout, baseline, "
                    f"round-N/{{{','.join(s for s in STAGES if verifier or s != 'verifier')}}} with N from 0 to "
                    f"{rounds - 1}")


def check_state_dir(root: Path, problems: list[str]) -> None:
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        problems.append(f"run.state_dir: {probe} is a file, not a directory; set run.state_dir to a directory "
                        "(runs are written under <state_dir>/runs)")
        return
    runs = root / "runs"
    if runs.exists() and not runs.is_dir():
        problems.append(f"run.state_dir: {runs} is a file; runs are written under it, so move it away or choose "
                        "another run.state_dir")
    elif not os.access(runs if runs.exists() else probe, os.W_OK | os.X_OK):
        problems.append(f"run.state_dir: {runs if runs.exists() else probe} is not writable; choose a writable "
                        "directory for run.state_dir")


def check_run_files(run: RunDir, problems: list[str]) -> None:
    """Before a resume: every stage the manifest calls done still has its output file, whole
    (and each trained round its adapter), so no stage fails half-way on a missing or torn file."""
    from loop.run.integrity import done_stage_files, redo_hint

    for key, rel, why in done_stage_files(run):
        if why:
            problems.append(f"{run.path / rel}: {why}, although the manifest says stage {key} is done; "
                            f"{redo_hint(run, key)}")
        elif rel.endswith("train.json"):
            stored = json.loads((run.path / rel).read_text(encoding="utf-8")).get("adapter")
            path = run.resolve(stored) if stored else None
            if path is not None and not (path / "adapter_config.json").exists():
                problems.append(f"{path}: the adapter of stage {key} is missing or incomplete; "
                                f"{redo_hint(run, key)}")


def check_devices(cfg: Config, problems: list[str]) -> None:
    c = cfg.cluster
    wants_gpu = c.sampler.num_gpus > 0 or c.trainer_num_gpus > 0 or cfg.training.device == "cuda"
    trainer_on_cpu = cfg.training.device == "cpu" or (cfg.training.device == "auto" and c.trainer_num_gpus == 0)
    if cfg.training.fused_kernels == "liger" and trainer_on_cpu:
        problems.append("training.fused_kernels: 'liger' needs a CUDA device but the trainer runs on the CPU "
                        f"(training.device {cfg.training.device!r}, cluster.trainer_num_gpus {c.trainer_num_gpus:g}); "
                        "set fused_kernels to 'auto' or 'off', or give the trainer a GPU")
    if not wants_gpu or c.address:
        return  # a remote cluster's GPUs are not visible from here
    # No torch import here (tens of seconds on a busy CPU): an NVIDIA driver shows up in /proc and /dev.
    have = Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))
    if not have:
        fields = [f for f, on in (("cluster.sampler.num_gpus", c.sampler.num_gpus > 0),
                                  ("cluster.trainer_num_gpus", c.trainer_num_gpus > 0),
                                  ("training.device", cfg.training.device == "cuda")) if on]
        problems.append(f"{', '.join(fields)}: a GPU is asked for but this machine has no NVIDIA driver/device; set "
                        "them to 0 / auto to run on the CPU, or run on a machine with a GPU")
        return
    check_gpu_count(cfg, problems)
    if cfg.training.fused_kernels == "liger":
        from loop.kernels.fused_kernels import liger_installed

        if not liger_installed():
            problems.append("training.fused_kernels: 'liger' but the liger-kernel package is not installed (pip "
                            "install -e '.[gpu]' installs it); or set it to 'auto' (Liger where it can run) or 'off'")


def visible_gpus(proc: Path = Path("/proc"), dev: Path = Path("/dev"), env: dict | None = None) -> int | None:
    """GPUs a local Ray started here would offer (it honours CUDA_VISIBLE_DEVICES); None: unknown."""
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return len([d for d in listed.split(",") if d.strip()])
    if (proc / "driver" / "nvidia" / "gpus").is_dir():  # one directory per GPU (its PCI address)
        return len(list((proc / "driver" / "nvidia" / "gpus").iterdir()))
    return len(list(dev.glob("nvidia[0-9]*"))) or None


def check_gpu_count(cfg: Config, problems: list[str], gpus: int | None = None) -> None:
    """A local run's workers against this machine's GPUs: more asked for than there are would
    leave Ray waiting for them forever (the driver checks the same against a cluster it joins)."""
    from loop.cluster.placement import check_fits, local_resources

    gpus = visible_gpus() if gpus is None else gpus
    if gpus is None or cfg.cluster.address:
        return
    plenty = {"CPU": float("inf"), **{k: float("inf") for k in local_resources(cfg)}}
    where = "CUDA_VISIBLE_DEVICES lists" if "CUDA_VISIBLE_DEVICES" in os.environ else "this machine has"
    for p in check_fits(cfg, {**plenty, "GPU": float(gpus)}):
        problems.append(f"{p} ({where} {gpus} GPU{'s' * (gpus != 1)})")


def check_address(address: str, problems: list[str], timeout: float = ADDRESS_TIMEOUT_S) -> None:
    if address == "local":
        return
    if address == "auto":  # what ray.init does with it: $RAY_ADDRESS, else the cluster started on this machine
        found = os.environ.get("RAY_ADDRESS") or _current_cluster()
        if not found:
            problems.append("cluster.address: 'auto' finds no Ray cluster ($RAY_ADDRESS is unset and no `ray start` "
                            "ran on this machine); start one with `ray start --head`, give host:port, or remove "
                            "cluster.address for a local Ray")
            return
        address = found
    a = address
    default_port = 6379
    if "://" in a:
        scheme, a = a.split("://", 1)
        if scheme != "ray":
            problems.append(f"cluster.address: {address!r} has scheme {scheme!r}; use host:port (the GCS port, "
                            "6379 by default) or ray://host:port")
            return
        default_port = 10001
    host, _, port_s = a.rpartition(":") if ":" in a else (a, "", str(default_port))
    if not port_s.isdigit() or not host:
        problems.append(f"cluster.address: {address!r} is not host:port; e.g. 10.0.0.5:6379")
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port_s)), timeout=timeout):
            pass
        other = None if default_port == 10001 else _ray_gcs_answer(f"{host}:{port_s}", timeout)
        if other:
            problems.append(f"cluster.address: {host}:{port_s} accepts connections but is not a Ray head ({other}); "
                            "give the head's GCS address (port 6379 by default, see `ray status` there) or remove "
                            "cluster.address for a local Ray")
    except socket.gaierror:
        problems.append(f"cluster.address: host {host!r} is unknown (DNS); check the address, or remove "
                        "cluster.address to start a local Ray")
    except TimeoutError:
        problems.append(f"cluster.address: no answer from {host}:{port_s} within {timeout:.0f} s; is the Ray head "
                        "running (`ray start --head`) and the port open? Remove cluster.address for a local Ray")
    except OSError as e:
        problems.append(f"cluster.address: cannot connect to {host}:{port_s} ({e.strerror or e}); start the Ray head "
                        "there (`ray start --head`) or remove cluster.address for a local Ray")


def _current_cluster() -> str | None:
    import tempfile

    try:
        return (Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster").read_text().strip() or None
    except OSError:
        return None


def _ray_gcs_answer(address: str, timeout: float) -> str | None:
    """None if a Ray GCS answers at address; else what answered instead. A firewall or
    proxy that accepts every connection, or another service on the port, passes a TCP
    check, and ray.init would then retry for minutes."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except Exception:  # noqa: BLE001 - without them only the TCP check is possible
        return None
    channel = grpc.insecure_channel(address)
    try:
        gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
            gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
        return None
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return None  # a Ray GCS with token auth: it is there
        return f"{e.code().name.lower()}: {(e.details() or '').splitlines()[0][:100]}"
    finally:
        channel.close()


# ---- prompts against the context window ------------------------------------------------------
def _round0_problems(cfg: Config) -> tuple[list[Problem], list[Problem]]:
    """The held-out set and round 0's problems, drawn as the run will draw them."""
    from loop import steps

    return steps.freeze_heldout(cfg), steps.make_problems(cfg, steps.initial_plan(cfg), 0)


def _problems_to_check(cfg: Config, drawn: list[Problem]) -> list[Problem]:
    """`drawn` and every row of file-based families (their later rounds draw from the same rows)."""
    from loop import steps

    out = list(drawn)
    for gen in steps.generators_by_family(cfg).values():
        pool = getattr(gen, "_pool", None)
        if isinstance(pool, dict):
            out += [p for levels in pool.values() for ps in levels.values() for p in ps]
    return out


def check_draws(cfg: Config, heldout: list[Problem], train: list[Problem], problems: list[str]) -> None:
    """A dataset (a family reading `options.path`) gives what the config asks: `heldout.per_category`
    held-out problems and each category's round-0 budget of training problems (the two sides of the
    id-hash split). A small dataset used to come out as a warning and a run with too few problems."""
    got_h: dict[tuple, int] = {}
    for p in heldout:
        got_h[(p.category, p.difficulty)] = got_h.get((p.category, p.difficulty), 0) + 1
    got_t: dict[str, int] = {}
    for p in train:
        got_t[p.category] = got_t.get(p.category, 0) + 1
    frac = cfg.heldout.fraction
    for g in cfg.generators:
        if "path" not in g.options:
            continue  # a procedural family: a short draw is a warning (logged by the draw), the run goes on
        for c, cc in g.categories.items():
            levels = cc.heldout_difficulties or [cc.difficulty]
            for i, d in enumerate(levels):
                k = cfg.heldout.per_category // len(levels) + (i < cfg.heldout.per_category % len(levels))
                have = got_h.get((c, d), 0)
                if have < k:
                    problems.append(
                        f"heldout.per_category: {k} held-out problem(s) of {g.family}/{c} at difficulty {d} are asked "
                        f"for, but the data gives only {have} (held-out takes the share heldout.fraction={frac:g} of "
                        f"the distinct rows of {g.options['path']}); lower heldout.per_category"
                        f"{f' to {have}' if have and len(levels) == 1 else ''}, raise heldout.fraction, or add rows")
            have_t = got_t.get(c, 0)
            if cc.budget and have_t < cc.budget:
                problems.append(
                    f"generators ({g.family}).categories.{c}.budget: {cc.budget} training problem(s) at difficulty "
                    f"{cc.difficulty} are asked for in round 0, but the data gives only {have_t} outside the held-out "
                    f"share; lower the budget{f' to {have_t}' if have_t else ''}, or add rows to {g.options['path']}")


def check_prompt_lengths(cfg: Config, problems: list[str], drawn: list[Problem] | None = None) -> None:
    model_dir = Path(cfg.model.resolved_path()).expanduser()
    try:
        count = token_counter(model_dir)
    except LookupError:
        problems.append(f"model.path: the tokenizer in {model_dir} has no chat template, and every prompt is a "
                        "chat; add chat_template.jinja (or a chat_template in tokenizer_config.json)")
        return
    except Exception as e:  # noqa: BLE001 - any failure here means vLLM would fail too
        problems.append(f"model.path: the tokenizer in {model_dir} does not load "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); save a working tokenizer "
                        "with the model")
        return
    limit, out_tokens = cfg.model.max_model_len, cfg.sampling.max_tokens
    seen: set[str] = set()
    too_long, tight = [], []
    if drawn is None:
        drawn = [p for ps in _round0_problems(cfg) for p in ps]
    for p in _problems_to_check(cfg, drawn):
        if p.id in seen:
            continue
        seen.add(p.id)
        chars = sum(len(m.content) for m in p.prompt)
        if chars > limit * MAX_CHARS_PER_TOKEN:  # cannot fit: not worth tokenising (minutes for megabytes)
            where = p.metadata.get("source") or f"{p.family}/{p.category} difficulty {p.difficulty}"
            too_long.append((f"{chars:,} characters, far more than {limit} tokens", where))
            continue
        n = count([m.model_dump() for m in p.prompt])
        where = p.metadata.get("source") or f"{p.family}/{p.category} difficulty {p.difficulty}"
        if n >= limit:
            too_long.append((n, where))
        elif n + out_tokens > limit:
            tight.append((n, where))
    if too_long:
        worst = max((n for n, _ in too_long if isinstance(n, int)), default=0)
        shown = "; ".join(f"{w} ({n} tokens)" if isinstance(n, int) else f"{w} ({n})" for n, w in too_long[:5])
        more = f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
        fix = (f"raise model.max_model_len to at least {worst + out_tokens} or shorten/remove those problems"
               if any(isinstance(n, int) for n, _ in too_long) else "shorten or remove those problems")
        problems.append(f"model.max_model_len: {len(too_long)} prompt(s) do not fit in {limit} tokens: {shown}{more}; "
                        + fix)
    if tight:
        log.warning("%d prompt(s) leave fewer than sampling.max_tokens=%d tokens for the answer within "
                    "model.max_model_len=%d (first: %s, %d tokens); their chains may be cut short",
                    len(tight), out_tokens, limit, tight[0][1], tight[0][0])
