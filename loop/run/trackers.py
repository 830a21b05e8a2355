"""Experiment trackers (`run.report_to`): TensorBoard, Weights & Biases, MLflow, trackio, each through its
own library. One tracker run per loop run: the ids of the W&B / MLflow / trackio runs are kept in
`<run>/trackers.json`, so `resume` continues the same tracker run instead of starting a second one.

What they get, under stable names (the run directory is the source; `sync` sends what is not sent yet):
  per trainer step, x = train/global_step (steps counted over the run's rounds):
      train/loss, train/learning_rate, train/grad_norm, train/tokens, train/epoch, train/round,
      train/gpu_util, train/gpu_mem_used_gib, train/cuda_allocated_gib, train/cuda_reserved_gib (on CUDA)
  per round, x = round:
      heldout/accuracy, heldout/accuracy/<family/category>, heldout/gain (over the base model),
      round/train_loss, round/acceptance, round/samples, round/accepted, round/tokens_sampled,
      round/sample_tokens_per_s, errors/<class>, budget/<family/category>, seconds/<stage>,
      verifier/<name>/<outcome>, verifier/judge_agreement, verifier/learned/<metric>
  once: baseline/heldout/accuracy, baseline/heldout/accuracy/<family/category>

TensorBoard writes the loop's scalars under <run>/tensorboard/loop/ (TRL writes each train stage's steps
under <run>/tensorboard/round-N/train/ from inside the trainer). A tracker that fails while the run goes on
is dropped with a warning (what it missed is sent by the next `resume`); it never stops the run.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loop.run.state import RunStateError, atomic_write_text, flatten

log = logging.getLogger("loop")

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
STATE = "trackers.json"
PROJECT = "reasoning-loop"  # the W&B project / MLflow experiment / trackio project unless the environment names one
INSTALL = "pip install -r requirements/trackers.txt (or `make trackers`)"
CONNECT_TIMEOUT_S = 5.0


class TrackerError(RunStateError):
    """A tracker in run.report_to cannot start; str() says which and what to do."""


# ---- can it start? (preflight) ------------------------------------------------------------------
def problem(name: str) -> str | None:
    """What keeps tracker `name` from starting here, as one line with the way out; None if nothing."""
    try:
        if name == "tensorboard":
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        elif name == "wandb":
            import wandb  # noqa: F401
        elif name == "mlflow":
            import mlflow  # noqa: F401
        elif name == "trackio":
            import trackio  # noqa: F401
        else:
            return f"run.report_to: unknown tracker {name!r}; known: {', '.join(TRACKERS)}"
    except ImportError as e:
        return (f"run.report_to: {name} is not installed ({e}); {INSTALL}, or take {name} out of run.report_to")
    if name == "wandb":
        return _wandb_problem()
    if name == "mlflow":
        return _mlflow_problem()
    return None


def _mlflow_problem() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        why = _unreachable(uri, "MLFLOW_TRACKING_URI", "mlflow", "start the tracking server, or set "
                           "MLFLOW_TRACKING_URI to a local store (e.g. sqlite:///mlflow.db)")
        if why:
            return why
    import mlflow

    try:  # the tracking store answers (a file store MLflow refuses, sqlite without sqlalchemy, a bad URI)
        mlflow.MlflowClient().search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - whatever the store raises, one line
        return (f"run.report_to: mlflow cannot use its tracking store ({uri or 'the default'}, MLFLOW_TRACKING_URI): "
                f"{type(e).__name__}: {_first(e)}")
    return None


def _first(e: BaseException, limit: int = 600) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _wandb_problem() -> str | None:
    mode = os.environ.get("WANDB_MODE", "online")
    if mode in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true"):
        return None
    import wandb

    try:
        key = wandb.Api(timeout=CONNECT_TIMEOUT_S).api_key if os.environ.get("WANDB_API_KEY") is None else "env"
    except Exception:  # noqa: BLE001 - no key found is reported below the same way
        key = None
    if not key:
        return ("run.report_to: wandb has no API key (WANDB_API_KEY, or `wandb login`); log in, or set "
                "WANDB_MODE=offline to keep the run on disk (`wandb sync` uploads it later)")
    url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    return _unreachable(url, "WANDB_BASE_URL", "wandb", "check the network, or set WANDB_MODE=offline to keep the "
                        "run on disk (`wandb sync` uploads it later)")


def _unreachable(url: str, var: str, name: str, fix: str) -> str | None:
    u = urlparse(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        socket.create_connection((u.hostname or "", port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        return f"run.report_to: {name} cannot reach {url} ({var}; {e.strerror or e}); {fix}"
    return None


# ---- the trackers -------------------------------------------------------------------------------
class _TensorBoard:
    name = "tensorboard"
    trainer_steps = False  # TRL's TensorBoardCallback writes them, from inside the trainer

    def __init__(self, run_dir: Path, run_name: str, config: dict, state: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard" / "loop"))
        if not state.get("config_logged"):
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```", 0)
            state["config_logged"] = True

    def log(self, scalars: dict[str, float], axis: str, step: int) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def flush(self) -> None:
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


class _Wandb:
    name = "wandb"
    trainer_steps = True

    def __init__(self, run_dir: Path, run_name: str, config: dict, state: dict):
        import wandb

        self.wandb = wandb
        state.setdefault("id", uuid.uuid4().hex[:8])
        # WANDB_PROJECT, WANDB_ENTITY, WANDB_DIR, WANDB_MODE ... are wandb's own; the run directory is the default.
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), id=state["id"], resume="allow",
                              name=run_name, config=config, dir=None if os.environ.get("WANDB_DIR") else str(run_dir),
                              settings=wandb.Settings(console="off", silent=True))
        self.run.define_metric("train/global_step")
        self.run.define_metric("train/*", step_metric="train/global_step")
        self.run.define_metric("round")
        for prefix in ("heldout", "baseline", "round", "errors", "budget", "seconds", "verifier"):
            self.run.define_metric(f"{prefix}/*", step_metric="round")

    def log(self, scalars: dict[str, float], axis: str, step: int) -> None:
        self.run.log({**scalars, axis: step})  # no step=: W&B's own counter keeps rising across resumes

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        self.run.finish()


class _Mlflow:
    name = "mlflow"
    trainer_steps = True

    def __init__(self, run_dir: Path, run_name: str, config: dict, state: dict):
        import mlflow

        self.mlflow = mlflow
        # MLflow's file store keeps a metric per file under its name's path: heldout/accuracy (a file) and
        # heldout/accuracy/<category> (a directory) cannot both be there, so there the names use '.' for '/'.
        self.file_store = mlflow.get_tracking_uri().startswith(("file:", "/", "."))
        # MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME are MLflow's own (MLflow's default store without them).
        if not os.environ.get("MLFLOW_EXPERIMENT_NAME") and not os.environ.get("MLFLOW_EXPERIMENT_ID"):
            mlflow.set_experiment(PROJECT)
        if state.get("run_id"):
            self.run = mlflow.start_run(run_id=state["run_id"])
        else:
            self.run = mlflow.start_run(run_name=run_name)
            state["run_id"] = self.run.info.run_id
            flat = flatten(config)
            mlflow.log_params({k[:250]: str(v)[:500] for k, v in flat.items()})

    def log(self, scalars: dict[str, float], axis: str, step: int) -> None:
        if self.file_store:
            scalars = {k.replace("/", "."): v for k, v in scalars.items()}
        self.mlflow.log_metrics(scalars, step=step, run_id=self.run.info.run_id)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        self.mlflow.end_run()


class _Trackio:
    name = "trackio"
    trainer_steps = True

    def __init__(self, run_dir: Path, run_name: str, config: dict, state: dict):
        import trackio

        self.trackio = trackio
        state.setdefault("name", run_name)
        self.run = trackio.init(project=PROJECT, name=state["name"],  # TRACKIO_DIR, TRACKIO_SPACE_ID: its own
                                config=config, resume="allow", embed=False)
        self.step = int(state.get("step", 0))
        self.state = state

    def log(self, scalars: dict[str, float], axis: str, step: int) -> None:
        # trackio has one x-axis: its own counter; the loop's axis is a logged value beside the scalars.
        self.trackio.log({**scalars, axis: step}, step=self.step)
        self.step += 1
        self.state["step"] = self.step

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        self.trackio.finish()


_CLASSES = {c.name: c for c in (_TensorBoard, _Wandb, _Mlflow, _Trackio)}


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and v == v}


# ---- what is sent, read from the run directory ---------------------------------------------------------
def baseline_scalars(run_dir: Path) -> dict[str, float] | None:
    try:
        m = json.loads((run_dir / "baseline" / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    out = {"baseline/heldout/accuracy": m.get("accuracy")}
    out |= {f"baseline/heldout/accuracy/{c}": a for c, a in (m.get("by_category") or {}).items()}
    return _numbers(out)


def round_scalars(m: dict[str, Any], base: float | None) -> dict[str, float]:
    """The loop's per-round scalars from a round's metrics.json."""
    h, t = m.get("heldout") or {}, m.get("train") or {}
    out: dict[str, Any] = {"heldout/accuracy": h.get("accuracy")}
    out |= {f"heldout/accuracy/{c}": a for c, a in (h.get("by_category") or {}).items()}
    if base is not None and isinstance(h.get("accuracy"), (int, float)):
        out["heldout/gain"] = h["accuracy"] - base
    n, acc = m.get("samples"), m.get("accepted")
    secs = m.get("stage_seconds") or {}
    out |= {"round/train_loss": t.get("train_loss"), "round/train_tokens_per_s": t.get("tokens_per_s"),
            "round/train_peak_gib": t.get("peak_gib"), "round/samples": n, "round/accepted": acc,
            "round/acceptance": acc / n if n else None, "round/tokens_sampled": m.get("tokens_sampled")}
    if secs.get("sample") and m.get("tokens_sampled"):
        out["round/sample_tokens_per_s"] = m["tokens_sampled"] / secs["sample"]
    out |= {f"errors/{c}": v for c, v in (m.get("errors") or {}).items()}
    out |= {f"budget/{c}": v for c, v in (m.get("budget") or {}).items()}
    out |= {f"seconds/{s}": v for s, v in secs.items()}
    health = m.get("verifier_health") or {}
    for name, counts in (health.get("verifiers") or {}).items():
        out |= {f"verifier/{name}/{o}": v for o, v in (counts or {}).items()}
    judge = health.get("judge") or {}
    if judge.get("compared"):
        out["verifier/judge_agreement"] = judge.get("agree", 0) / judge["compared"]
    learned = health.get("learned") or {}
    out |= {f"verifier/learned/{k}": v for k, v in learned.items()}
    return _numbers(out)


STEP_FIELDS = ("loss", "learning_rate", "grad_norm", "tokens", "epoch", "token_accuracy", "gpu_util",
               "gpu_mem_used_gib", "cuda_allocated_gib", "cuda_reserved_gib")


def read_steps(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn line: the report names damage; trackers send what reads
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    return rows


class Trackers:
    """The run's trackers, started once per process (`open`), fed by `sync` after each round, closed by
    `close`. trackers.json records each tracker's run id and the rounds it has been sent."""

    def __init__(self, run_dir: Path, active: list[Any], state: dict):
        self.run_dir, self.active, self.state = run_dir, active, state
        self.started = list(active)  # closed at the end, those dropped on a failure too

    @classmethod
    def open(cls, run_dir: Path, names: list[str], config: dict, *, allow_missing: bool = False) -> Trackers:
        run_dir = Path(run_dir)
        state = _read_state(run_dir)
        active = []
        for name in names:
            why = problem(name)
            tracker = None
            if why is None:
                try:
                    tracker = _CLASSES[name](run_dir, run_dir.name, config, state.setdefault(name, {}))
                except Exception as e:  # noqa: BLE001 - any library's failure to start is one message
                    why = f"run.report_to: {name} could not start ({type(e).__name__}: {_first(e)})"
            if why is not None:
                if not allow_missing:
                    raise TrackerError(why + "; or pass --allow-no-tracker to run without it")
                log.warning("%s; going on without it (--allow-no-tracker)", why)
                continue
            active.append(tracker)
        out = cls(run_dir, active, state)
        out._save()
        if active:
            log.info("trackers: %s", ", ".join(t.name for t in active)
                     + (f" (TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'})"
                        if any(t.name == "tensorboard" for t in active) else ""))
        return out

    def sync(self) -> None:
        """Send every finished round (and the baseline) that a tracker has not had yet."""
        if not self.active:
            return
        base = baseline_scalars(self.run_dir)
        rounds = []
        for d in sorted(self.run_dir.glob("round-[0-9][0-9][0-9]")):
            try:
                rounds.append((int(d.name[6:]), json.loads((d / "metrics.json").read_text())))
            except (OSError, ValueError):
                break  # not finished (or damaged): later rounds wait for it
        for t in list(self.active):
            sent = self.state.setdefault(t.name, {})
            try:
                if base is not None and not sent.get("baseline"):
                    t.log(base, "round", 0)
                    sent["baseline"] = True
                done = set(sent.get("rounds", []))
                step = int(sent.get("global_step", 0))
                for r, m in rounds:
                    if r in done:
                        continue
                    for row in (read_steps(self.run_dir / f"round-{r:03d}" / "train_log.jsonl")
                                if t.trainer_steps else []):
                        vals = {f"train/{k}": row.get(k) for k in STEP_FIELDS}
                        t.log(_numbers({**vals, "train/round": r}), "train/global_step", step + int(row["step"]))
                    step += int((m.get("train") or {}).get("steps") or 0)
                    t.log(round_scalars(m, base.get("baseline/heldout/accuracy") if base else None), "round", r)
                    done.add(r)
                    sent["rounds"], sent["global_step"] = sorted(done), step
                t.flush()
            except Exception as e:  # noqa: BLE001 - a tracker's failure never stops the loop
                log.warning("tracker %s failed (%s: %s); the run goes on without it, and `resume` sends it what "
                            "it missed", t.name, type(e).__name__, _first(e))
                self.active.remove(t)
            finally:
                self._save()

    def close(self) -> None:
        for t in self.started:
            try:
                t.finish()
            except Exception as e:  # noqa: BLE001
                log.warning("tracker %s did not close cleanly (%s)", t.name, e)
        self.active, self.started = [], []
        self._save()

    def _save(self) -> None:
        if not self.state and not (self.run_dir / STATE).exists():  # a run without trackers gets no file
            return
        atomic_write_text(self.run_dir / STATE, json.dumps(self.state, indent=1, sort_keys=True) + "\n")


def _read_state(run_dir: Path) -> dict:
    try:
        data = json.loads((run_dir / STATE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise TrackerError(f"{run_dir / STATE} cannot be read ({e}): it holds the trackers' run ids; restore it, "
                           "or delete it to start new tracker runs for this loop run") from None
    return data if isinstance(data, dict) else {}
