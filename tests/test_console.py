"""A quiet console: the workers' output goes to run.log and <run>/logs/ (the console only with -v), progress
lines of many short calls are summed per stage, and nothing is lost (run.log and <run>/logs/ keep every line)."""
from __future__ import annotations

import logging

import pytest

from loop.run import logs, progress


@pytest.fixture
def console(tmp_path, capsys):
    """setup_logging as launch.py does (the console handler on this test's stderr), a run log attached."""
    import ray  # noqa: F401 - imported first, as in a run: setup_logging takes Ray's console handler off

    def start(verbose: bool = False):
        logs.setup_logging(verbose)
        logs.attach_run_log(tmp_path)
        return tmp_path
    yield start
    logs.detach_run_log()
    logging.getLogger().removeHandler(logs._console)
    logging.captureWarnings(False)
    logs._console, logs._verbose = None, False


def test_worker_lines_go_to_files_not_the_console(console, capsys):
    run = console()
    batch = {"pid": 4242, "ip": "10.0.0.1", "localhost": "10.0.0.1", "actor_name": "SamplerWorker", "is_err": True,
             "lines": ["Triton is installed, but doesn't include CPU backend. Disabling Triton.", "WARNING x"]}
    logs._worker_lines({"pid": 4242, "lines": ["before the actor has its name"]})
    logs._worker_lines(batch)
    logs._worker_lines({"pid": 4242, "lines": []})
    logs._worker_lines({"pid": "raylet", "lines": ["Task killed: the node is low on memory"]})
    logs._worker_lines({"pid": "autoscaler", "lines": ["======== Autoscaler status: 2026-12-06 07:56:47 ========",
                                                       "Total Usage:"]})  # its periodic status: logs/ only
    logging.getLogger("loop").info("round 0: training on 12 chains")
    logging.getLogger("ray").warning("Token authentication is enabled for this Ray cluster")
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")
    logging.getLogger("loop").warning("round 0: no accepted chains; keeping the previous adapter")
    err = capsys.readouterr().err
    assert "gemm_4bit_forward" not in err and "no accepted chains" in err
    assert "Triton" not in err and "pid=4242" not in err and "Token authentication" not in err
    assert "Autoscaler status" not in err
    assert "training on 12 chains" in err and "raylet: Task killed" in err  # the loop, and Ray's node notices
    logs.detach_run_log()  # closes the files
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["SamplerWorker-4242.log", "autoscaler.log"]
    assert (run / "logs" / "autoscaler.log").read_text().splitlines() == [
        "======== Autoscaler status: 2026-12-06 07:56:47 ========", "Total Usage:"]
    assert (run / "logs" / "SamplerWorker-4242.log").read_text().splitlines() == [
        "before the actor has its name", *batch["lines"]]
    text = (run / "run.log").read_text()
    for needle in ("(SamplerWorker pid=4242) Triton is installed", "(SamplerWorker pid=4242) WARNING x",
                   "Token authentication", "training on 12 chains", "raylet: Task killed", "gemm_4bit_forward"):
        assert needle in text
    assert "Autoscaler status" not in text  # every 5 s: it drowned the loop's own lines


def test_verbose_keeps_ray_notices_on_the_console(console, capsys):
    console(verbose=True)
    logging.getLogger("ray").warning("Token authentication is enabled for this Ray cluster")
    logs._worker_lines({"pid": 7, "actor_name": "TrainerActor", "lines": ["step 1"]})
    err = capsys.readouterr().err
    # Ray's own printer shows the workers' lines under -v (route_worker_output leaves it in place); ours
    # go to the files only, so they are not printed twice
    assert "Token authentication" in err and "step 1" not in err


def test_many_short_calls_are_one_line_per_stage(console, capsys, monkeypatch):
    run = console()
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    for _ in range(50):  # the judge: one generate call per batch of 64 prompts
        with progress.progress(64, "judge", "prompt") as bar:
            clock[0] += 0.2
            bar.update(64)
    err = capsys.readouterr().err
    assert err.count("judge:") == 1 and "judge: 64/64 prompts (0s)" in err  # the first call, then quiet
    for hook in progress.STAGE_END:  # RunDir.stage calls them when the stage's compute returns
        hook()
    err = capsys.readouterr().err
    assert "judge: 3136 prompts in 49 calls (10s)" in err
    text = (run / "run.log").read_text()
    assert text.count("judge: 64/64 prompts") == 50  # every call is in run.log (DEBUG)


def test_a_long_call_shows_a_line_every_30s(console, capsys, monkeypatch):
    console()
    clock = [0.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    with progress.progress(100, "round 0 sample", "prompt") as bar:
        for _ in range(100):
            clock[0] += 1.0
            bar.update(1)
    lines = [x for x in capsys.readouterr().err.splitlines() if "round 0 sample" in x]
    assert len(lines) == 4 and lines[-1].endswith("100/100 prompts (100s)")  # at 30, 60, 90 s and the end


@pytest.mark.parametrize("verbose", [False, True])
def test_route_worker_output_takes_rays_printer_off(console, verbose):
    """Ray's stream of the workers' lines (ray.init(log_to_driver=True)) reaches our files; Ray's own printer
    to the console stays only with -v. Without a run log (`eval`) Ray's printing is left alone."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as streams

    streams.add_handler("ray_print_logs", lambda data: None)
    try:
        assert logs.route_worker_output() is False  # no run log attached yet
        console(verbose)
        assert logs.route_worker_output() is True
        names = [n for n, _ in streams.handlers]
        assert "loop_worker_logs" in names and ("ray_print_logs" in names) is verbose
    finally:
        streams.remove_handler("ray_print_logs")
        streams.remove_handler("loop_worker_logs")


def test_worker_logging_leaves_a_driver_or_test_process_alone():
    """In a Ray worker the loop's INFO lines go to stderr (Ray streams them to <run>/logs/); anywhere else
    (the driver, a test calling a worker class in-process) the process's own logging stands."""
    import logging

    from loop.run.logs import worker_logging

    logger = logging.getLogger("loop")
    before = (list(logger.handlers), logger.level, logger.propagate)
    worker_logging()
    assert (list(logger.handlers), logger.level, logger.propagate) == before
