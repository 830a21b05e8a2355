"""A sampler engine that cannot be built is explained by the engine's own error line (loop/cluster/engine_errors.py),
not by the wrapper the actor raises. The lines below are as vLLM 0.26 printed them on an H100 (2026-12-07, ten
engines starting on one GPU at once) and as Ray forwards them to the driver."""
from __future__ import annotations

from loop.cluster.engine_errors import error_lines, explain
from loop.run import logs

WRAPPER = RuntimeError("The actor died because of an error raised in its creation task, ray::SamplerWorker.__init__()"
                       "\nTraceback (most recent call last):\n  File \"vllm/v1/engine/utils.py\", line 1272\n"
                       "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}")
ENGINE = ["(EngineCore pid=12289) ERROR 12-07 09:44:35 [core.py:1330]     raise ValueError(",
          "(EngineCore pid=12289) ERROR 12-07 09:44:35 [core.py:1330] ValueError: No available memory for the cache "
          "blocks. Try increasing `gpu_memory_utilization` when initializing the engine"]


def test_the_wrapper_is_never_the_cause():
    assert error_lines(str(WRAPPER)) == []
    assert error_lines(ENGINE[1]) == ["ValueError: No available memory for the cache blocks. Try increasing "
                                      "`gpu_memory_utilization` when initializing the engine"]


def test_a_memory_failure_names_the_cause_and_the_settings():
    msg = explain(WRAPPER, ENGINE)
    assert "ValueError: No available memory for the cache blocks" in msg
    assert "cluster.sampler.gpu_memory_utilization" in msg and "launch.py resume" in msg


def test_an_unknown_cause_points_to_the_engine_output():
    msg = explain(WRAPPER, ["(EngineCore pid=1) ImportError: libcuda.so.1: cannot open shared object file"])
    assert "ImportError: libcuda.so.1" in msg and "run.log" in msg


def test_without_any_error_line_the_exception_itself_is_shown():
    assert "could not be built: The actor died" in explain(WRAPPER, [])


def test_the_driver_keeps_the_workers_last_error_lines():
    logs.forget_worker_errors()
    logs._worker_lines({"pid": 12289, "lines": ["INFO starting", *ENGINE], "actor_name": "SamplerWorker"})
    got = logs.recent_worker_errors(wait_s=1.0, want=lambda lines: any(error_lines(x) for x in lines))
    assert explain(WRAPPER, got).count("No available memory") == 1
    logs.forget_worker_errors()
    assert logs.recent_worker_errors() == []
