#!/usr/bin/env python
"""Iterative self-improvement loop for reasoning models: sample, verify, analyze, accept,
retrain (QLoRA), evaluate, repeat; then export the adapter as a starting point for RL.

  python launch.py run                         # the embedded default (configs/default.yaml)
  python launch.py run -c configs/x.yaml --set loop.rounds=5 --set sampling.n=8
  python launch.py resume latest               # continue after a crash or kill -9
  python launch.py report latest               # tables and plots in <run>/report/
  python launch.py export latest               # RL-ready adapter bundle in <run>/export/
  python launch.py eval -c configs/default.yaml [--adapter DIR]
  python launch.py list                        # every generator family, verifier and policy
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_CONFIG = "configs/default.yaml"
VERBOSE_HELP = ("the full stream: debug logging, and the workers' output (Ray actors, vLLM, TRL) on the console too; "
                "without it that output goes only to <run>/run.log and <run>/logs/")
log = logging.getLogger("loop")


def _samples(text: str) -> int:
    """`export --samples N`: checked here, before vLLM starts to measure with it."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not a whole number") from None
    if not 1 <= n <= 16384:
        raise argparse.ArgumentTypeError(f"{n} completions per problem: give 1 to 16384 (vLLM's limit); 0 would "
                                         "measure nothing")
    return n


def _round(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not a round number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n}: rounds count from 0 (round-000 is round 0)")
    return n


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="launch.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def cfg_args(p):
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set loop.rounds=5 (repeatable; values are YAML)")

    def watch_args(p):
        # SUPPRESS: `launch.py -v run` (before the command) keeps working; the subcommand's default does not undo it
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        p.add_argument("--allow-no-tracker", action="store_true",
                       help="a tracker of run.report_to that is not installed or cannot connect is a warning and the "
                            "run goes on without it (default: a preflight error)")

    stop_help = ("stop cleanly after this stage completes, e.g. round-0/verify or baseline (stages:"
                 " setup/heldout, baseline, round-N/{problems,sample,verify,analyze,accept,verifier,train,evaluate,"
                 "plan}; verifier only with learned_verifier.enabled)")
    p = sub.add_parser("run", help="start a new run", description="Start a new multi-round run from a config.",
                       epilog="Config sections: run, model, quantization, lora, sampling, generators, heldout, "
                              "verifiers, policies, training, loop, cluster (loop/config.py documents every field; "
                              "`launch.py list` shows the plug-ins and their options).")
    cfg_args(p)
    p.add_argument("--stop-after", metavar="STAGE", help=stop_help)
    watch_args(p)
    p = sub.add_parser("resume", help="continue a run from its last completed stage",
                       description="Continue an interrupted or failed run; finished stages are never redone. "
                                   "Only loop.rounds (to extend a run), cluster.* (where it runs) and run.report_to "
                                   "(where it is watched) may change.")
    p.add_argument("run", help="run directory, run id under <state_dir>/runs, or 'latest'")
    p.add_argument("--state-dir", default="state", help="root of run directories (runs live in <state-dir>/runs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="only loop.rounds, cluster.* and run.report_to may change, e.g. --set loop.rounds=5 to extend "
                        "a finished run, --set cluster.address=null to continue on a local Ray")
    p.add_argument("--stop-after", metavar="STAGE", help=stop_help)
    p.add_argument("--redo", metavar="STAGE", help="compute this finished stage and every stage after it again "
                   "(the way out when a stage's file is damaged; `report` names the stage)")
    watch_args(p)
    for name, hlp in (("report", "write <run>/report/: summary.md and PNG plots"),
                      ("export", "package the adapter with the best held-out accuracy as an RL-ready bundle in "
                                 "<run>/export/ (TRL, verl, vLLM)")):
        p = sub.add_parser(name, help=hlp, description=hlp)
        p.add_argument("run", help="run directory, run id, or 'latest'")
        p.add_argument("--state-dir", default="state", help="root of run directories (runs live in <state-dir>/runs)")
    p.add_argument("--round", type=_round, metavar="N", help="export round N's adapter instead of the best one")
    p.add_argument("--allow-no-gain", action="store_true",
                   help="export even when no adapter beats the base model on held-out (a loud warning instead "
                        "of a refusal)")
    p.add_argument("--pass-rates", choices=("auto", "measure", "samples"), default="auto",
                   help="how the RL prompt pool's pass rates are measured: 'measure' samples every train problem "
                        "with the adapter (vLLM), 'samples' reuses the rounds' own samples made by that adapter, "
                        "'auto' (default) reuses them when they exist, else measures")
    p.add_argument("--samples", type=_samples, metavar="N",
                   help="completions per problem when measuring, 1 to 16384 (default sampling.n)")
    p = sub.add_parser("eval", help="held-out accuracy of a model (and adapter) per category",
                       description="Evaluate the config's model, optionally with a LoRA adapter, on the config's "
                                   "held-out set, per category.")
    cfg_args(p)
    p.add_argument("--adapter", help="PEFT adapter directory (e.g. state/runs/<id>/round-002/adapter)")
    hlp = "every registered generator family, verifier and policy, with options and where it came from"
    p = sub.add_parser("list", help=hlp, description=hlp + " (the names the config's family/name fields accept; "
                       "plug-ins of installed packages appear through their entry points)")
    p.add_argument("-c", "--config", help="also load the plug-ins named in this config's `plugins:` list")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE_OR_FILE",
                   help="also load this module or .py file (repeatable)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from loop.run.logs import setup_logging

    setup_logging(args.verbose)
    from loop.config import ConfigError, load_config
    from loop.export.choice import ExportError
    from loop.plugins import PluginError
    from loop.registry import RegistryError
    from loop.run.integrity import damage
    from loop.run.state import (
        DamagedFile,
        RunStateError,
        StageFailed,
        exit_code,
        install_signal_handlers,
        interrupt_seen,
        received_signal,
    )

    install_signal_handlers()  # SIGTERM / SIGHUP end a run like Ctrl-C: marked interrupted, engines stopped
    try:
        if args.cmd == "list":
            from loop.catalog import print_catalog

            plugins = list(args.plugins)
            if args.config:
                plugins = load_config(args.config).plugins + plugins
            print_catalog(plugins)
        elif args.cmd == "run":
            from loop.runner import start

            start(load_config(args.config, args.overrides), args.stop_after, args.allow_no_tracker)
        elif args.cmd == "resume":
            from loop.runner import resume

            resume(args.run, args.state_dir, args.overrides, args.stop_after, args.redo, args.allow_no_tracker)
        elif args.cmd == "report":
            from loop.report.summary import write_report
            from loop.run.state import find_run

            run = find_run(args.state_dir, args.run)
            out = write_report(run.path)
            print(f"report written to {out}")
            if bad := damage(run):
                print(f"error: run {run.path.name} is damaged; the report shows what could be read (its Notes say "
                      "what was left out):\n  - " + "\n  - ".join(bad), file=sys.stderr)
                return 1
        elif args.cmd == "export":
            from loop.export import export_run
            from loop.run.state import find_run

            run = find_run(args.state_dir, args.run)
            if bad := damage(run):
                raise RunStateError(f"run {run.path.name} is damaged, so nothing is exported (a bundle from it could "
                                    "not be trusted):\n  - " + "\n  - ".join(bad))
            out = export_run(run, round_=args.round, allow_no_gain=args.allow_no_gain,
                             pass_rates=args.pass_rates, samples=args.samples)
            print(f"RL bundle written to {out}")
        elif args.cmd == "eval":
            from loop.runner import evaluate_only

            evaluate_only(load_config(args.config, args.overrides), args.adapter)
    except (ConfigError, FileNotFoundError, ExportError, PluginError, RunStateError, RegistryError, DamagedFile) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StageFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM / SIGHUP (loop.run.state.Interrupted)
        interrupt_seen()
        print(f"interrupted ({received_signal()}); finished work is saved", file=sys.stderr)
        return exit_code()  # 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP
    except Exception as e:  # noqa: BLE001 - a bug or a broken environment: one line, traceback to the log
        return _unexpected(e, getattr(args, "state_dir", "state"))
    return 0


def _unexpected(e: BaseException, state_dir: str) -> int:
    """One line for the user; the full traceback goes to the run's log (or a crash log)."""
    import traceback

    from loop.config import ROOT
    from loop.run.logs import write_traceback

    where = write_traceback(e, state_dir)
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(str(ROOT))
              and "/.venv/" not in f.filename]
    if isinstance(e, SyntaxError) and e.filename:
        frames.append(traceback.FrameSummary(e.filename, e.lineno or 0, "<module>"))
    at = ""
    if frames:
        f = Path(frames[-1].filename)
        at = f" at {f.relative_to(ROOT) if f.is_relative_to(ROOT) else f}:{frames[-1].lineno}"
    hint = ""
    if isinstance(e, (ImportError, SyntaxError)):
        hint = ("; a module failed to import: if it is a plug-in you added, fix it or remove its import line from "
                "its package's __init__.py (or its `plugins:` entry)")
    msg = str(e).splitlines()[0] if str(e) else ""
    print(f"error: unexpected {type(e).__name__}{at}: {msg}{hint} (full traceback in {where})", file=sys.stderr)
    return 1


_early: list[int] = []


def _early_signal(signum, _frame):
    """Until main() puts the run's handlers in place (imports take a second): end like Ctrl-C."""
    _early.append(signum)
    raise KeyboardInterrupt


def _exit(rc: int) -> None:
    """After an interrupt, leave without the interpreter's teardown: Ray's and vLLM's native
    threads can crash it (exit -11 instead of 130); everything that matters is closed by now."""
    if rc <= 128:
        sys.exit(rc)
    import logging as _logging

    _logging.shutdown()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


if __name__ == "__main__":
    import os
    import signal

    for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, _early_signal)
    try:
        code = main()
    except KeyboardInterrupt:  # before any work started
        sig = signal.Signals(_early[-1] if _early else signal.SIGINT)
        print(f"interrupted ({sig.name}) before anything started", file=sys.stderr)
        code = 128 + sig
    _exit(code)
