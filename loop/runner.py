"""Start, resume and evaluate runs: the glue between the CLI and the controller."""
from __future__ import annotations

import copy
import logging
from pathlib import Path

from loop.config import Config, ConfigError, dump_config, load_config
from loop.run import base_record, integrity
from loop.run.logs import attach_run_log
from loop.run.state import (
    RunDir,
    RunStateError,
    StopAfter,
    atomic_write_text,
    deferred_signals,
    find_run,
    flatten,
    interrupt_seen,
    received_signal,
)

log = logging.getLogger("loop")

# Keys a resume may change: extending a run by more rounds is the common case; `cluster.*`
# says where the work runs, not what it computes (resume on another cluster, or locally), and
# `run.report_to` where it is watched (a tracker added on resume is sent the finished rounds).
RESUMABLE_CHANGES = {"loop.rounds"}
RESUMABLE_PREFIXES = ("cluster.", "run.report_to")


def config_diff(old: Config, new: Config) -> list[str]:
    a, b = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES and not k.startswith(RESUMABLE_PREFIXES)]


def _stop_ray() -> None:
    """Shut down a Ray that a failed start left behind (its node processes, a driver half connected)."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and (ray.is_initialized() or getattr(ray._private.worker, "_global_node", None) is not None):
        ray.shutdown()


def start_cluster(cfg: Config):
    """Cluster(cfg), with a signal that arrives meanwhile held until Ray is whole (deferred_signals):
    an interrupt inside ray.init either is lost (Ray's handlers) or leaves a half-built driver that
    crashes the interpreter at exit. Then the signal is raised, the cluster shut down first."""
    import ray  # noqa: F401 - imported before the deferral, which keeps Ray's own SIGTERM handlers out

    from loop.cluster.driver import Cluster

    cluster = None
    try:
        with deferred_signals():
            cluster = Cluster(cfg)
    except BaseException:
        with deferred_signals(reraise=False):
            if cluster is not None:
                cluster.shutdown()
            else:
                _stop_ray()
        raise
    return cluster


def _execute(cfg: Config, run: RunDir, allow_no_tracker: bool = False) -> RunDir:
    """Run the controller; whatever happens, the manifest says how it ended, the cluster is
    shut down (engines before Ray), the trackers closed and the run's lock is released."""
    from loop.controller import Controller
    from loop.run.trackers import Trackers

    cluster = trackers = None
    try:
        trackers = Trackers.open(run.path, cfg.run.report_to, cfg.model_dump(mode="json"),
                                 allow_missing=allow_no_tracker)
        trackers.sync()  # on resume: what finished while no tracker was listening
        cluster = start_cluster(cfg)
        Controller(cfg, run, cluster, trackers).run_all()
    except StopAfter as e:
        run.set_status("stopped")
        log.info("stopped after %s as asked; continue with: python launch.py resume %s", e, run.path)
        return run
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM / SIGHUP (Interrupted)
        interrupt_seen()
        run.set_status("interrupted", error=f"interrupted by {received_signal()}")
        log.error("interrupted at %s; finished stages are saved. Continue with: python launch.py resume %s",
                  run.manifest.get("cursor"), run.path)
        raise
    except BaseException as e:
        run.set_status("failed", error=f"{type(e).__name__}: {e}")
        log.error("run failed at %s: %s. Finished stages are saved; after fixing the cause continue with: "
                  "python launch.py resume %s", run.manifest.get("cursor"), e, run.path)
        raise
    finally:
        with deferred_signals(reraise=False):  # a second Ctrl-C must not cut the shutdown short
            try:
                if cluster is not None:
                    cluster.shutdown()
            finally:
                try:
                    if trackers is not None:
                        trackers.close()
                finally:
                    run.release()
    log.info("run %s completed: %d rounds. Report: python launch.py report %s", run.path.name,
             run.manifest["rounds_completed"], run.path)
    return run


def start(cfg: Config, stop_after: str | None = None, allow_no_tracker: bool = False) -> RunDir:
    from loop.preflight import preflight

    preflight(cfg, stop_after=stop_after, allow_no_tracker=allow_no_tracker)
    run = RunDir.create(Path(cfg.run.state_dir), cfg.run.name)
    run.acquire("run")
    attach_run_log(run.path)
    run.stop_after = stop_after
    atomic_write_text(run.path / "config.yaml", dump_config(cfg))
    integrity.record_config(run, cfg.model_dump(mode="json"))
    base_record.record(run, cfg)
    log.info("run directory: %s (log: %s; the workers' output: %s, or -v to see it here)", run.path,
             run.path / "run.log", run.path / "logs")
    return _execute(cfg, run, allow_no_tracker)


def resume(run_ref: str, state_dir: str, overrides: list[str], stop_after: str | None = None,
           redo: str | None = None, allow_no_tracker: bool = False) -> RunDir:
    from loop.preflight import preflight

    run = find_run(Path(state_dir), run_ref)
    run.acquire("resume")  # refused while another process writes this run
    try:
        attach_run_log(run.path)
        run.stop_after = stop_after
        saved = run.config_raw()
        edits = integrity.hand_edits(run, saved)
        if edits:
            raise RunStateError(
                f"{run.path / 'config.yaml'} was edited after the run was made (its digest is not the one in "
                "manifest.json); the finished stages were made with the old values. Changed:\n  "
                + "\n  ".join(edits) + "\nPut the old values back (manifest.json keeps them under `config`); "
                "resume may change only loop.rounds and cluster.*, and those through --set, e.g. --set "
                "loop.rounds=5; for other changes start a new run")
        if edits == []:
            integrity.record_config(run, saved)  # the same values, laid out differently
        try:
            old = load_config(None, raw=copy.deepcopy(saved))
        except ConfigError as e:
            raise RunStateError(f"{run.path / 'config.yaml'} no longer loads ({e}); it must be the config the "
                                "run was made with: restore it, or start a new run") from None
        cfg = load_config(None, overrides, raw=copy.deepcopy(saved))
        changed = config_diff(old, cfg)
        if changed:
            hint = ""
            if any(c.startswith("run.state_dir") for c in changed):
                hint = (f"\n(the run found is {run.path}; to resume a run under another state directory, name it with "
                        "--state-dir DIR instead of --set run.state_dir)")
            raise ConfigError("refusing to resume with a changed config (the finished rounds were made with the "
                              "old one); start a new run instead. Changed:\n  " + "\n  ".join(changed) + hint)
        if redo is not None:
            redo_from(run, redo)
        if run.manifest.get("status") == "completed" and cfg.loop.rounds <= run.manifest["rounds_completed"]:
            log.info("run %s is already complete (%d rounds); extend it with --set loop.rounds=N",
                     run.path.name, run.manifest["rounds_completed"])
            if cfg.run.report_to:  # e.g. --set run.report_to=[wandb]: the finished rounds are sent to it
                from loop.preflight import check_trackers
                from loop.run.trackers import Trackers

                problems: list[str] = []
                check_trackers(cfg, problems, allow_no_tracker)
                if problems:
                    raise ConfigError("\n".join(problems))
                trackers = Trackers.open(run.path, cfg.run.report_to, cfg.model_dump(mode="json"),
                                         allow_missing=allow_no_tracker)
                try:
                    trackers.sync()
                finally:
                    trackers.close()
            run.release()
            return run
        preflight(cfg, stop_after=stop_after, run=run, allow_no_tracker=allow_no_tracker)
        base_record.check(run, cfg, "resuming it")
        if run.manifest.get("status") == "running":
            # We hold the lock, so the process that wrote `running` is gone (killed -9, power loss).
            log.warning("run %s says `running` but no process holds it: treating it as interrupted",
                        run.path.name)
            run.set_status("interrupted", error="the process running it disappeared (killed?)")
        if cfg.loop.rounds != old.loop.rounds:
            atomic_write_text(run.path / "config.yaml", dump_config(cfg))
            integrity.record_config(run, cfg.model_dump(mode="json"))
        run.manifest["attempts"] = run.manifest.get("attempts", 1) + 1
        run.manifest.pop("error", None)  # the last attempt's; this one records its own
        run.set_status("running")
    except BaseException:
        run.release()
        raise
    log.info("resuming %s at %s", run.path.name, run.manifest.get("cursor"))
    return _execute(cfg, run, allow_no_tracker)


def redo_from(run: RunDir, key: str) -> None:
    """Forget `key` and every stage finished after it (the manifest's `done` is in execution
    order), so resume computes them again: the way out of a damaged stage file."""
    done = run.manifest.get("done", [])
    if key not in done:
        raise RunStateError(f"--redo {key}: not a finished stage of {run.path.name}; finished stages: "
                            f"{', '.join(done) or 'none'}")
    keep = done[:done.index(key)]
    log.warning("--redo %s: %d finished stage(s) will be computed again (%s)", key, len(done) - len(keep),
                ", ".join(done[len(keep):]))
    run.manifest["done"] = keep
    run.manifest["cursor"] = keep[-1] if keep else None
    plans = [int(k.split("/")[0][6:]) for k in keep if k.startswith("round-") and k.endswith("/plan")]
    run.manifest["rounds_completed"] = max(plans) + 1 if plans else 0
    run.manifest.setdefault("redone", []).append({"from": key, "attempt": run.manifest.get("attempts", 1) + 1})
    run.save()


def evaluate_only(cfg: Config, adapter: str | None) -> dict:
    """Held-out accuracy of the model (+ adapter) per category, in a throwaway run dir."""
    import tempfile

    from loop.controller import Controller
    from loop.preflight import preflight

    preflight(cfg, adapter=adapter, new_run=False)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(Path(tmp), "eval")
        cluster = None
        try:
            cluster = start_cluster(cfg)
            ctl = Controller(cfg, run, cluster)
            heldout = ctl.freeze_heldout()
            m = ctl.evaluate("eval", heldout, str(Path(adapter).resolve()) if adapter else None, run.path / "eval-out")
        finally:
            if cluster is not None:
                with deferred_signals(reraise=False):
                    cluster.shutdown()
    print(f"\nheld-out accuracy {m['accuracy']:.3f} over {m['n']} problems"
          f" ({cfg.model.path}{' + ' + adapter if adapter else ''})")
    for cat, acc in m["by_category"].items():
        print(f"  {cat:<32} {acc:.3f}")
    for lvl, acc in m["by_category_difficulty"].items():
        print(f"    {lvl:<30} {acc:.3f}")
    return m
