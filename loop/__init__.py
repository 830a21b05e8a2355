"""reasoning-loop's engine. Read `controller.py` first: its `run_all` is the loop, stage by stage.

The order of stages lives only in `controller.py`; the stages themselves are plain functions in
`steps.py`. Each folder below says in one line what it holds, so you can skip what you don't need.

The vocabulary (plug-ins import these two and nothing else from `loop`):
    records.py     Problem, Sample, Verdict, ErrorRecord, error classes: what flows between stages
    registry.py    Registry[T], @register(name), typed Options per plug-in

The loop, its config and its plug-ins:
    config.py      the one pydantic config tree (the single source of truth), --set parsing
    plugins.py     loads built-in and outside plug-ins (entry points, `plugins:` in the config)
    catalog.py     `launch.py list`: every plug-in with its options
    runner.py      start / resume / evaluate-only: a run directory, then the controller
    preflight.py   what is checked before Ray or vLLM start
    controller.py  the loop: sample -> verify -> analyze -> accept -> train -> evaluate -> plan
    steps.py       the stages as plain functions
    analysis.py    per-round error analysis; taxonomy.py: how verdicts become error classes
    verifier_data.py  the learned verifier's examples (from verdicts), agreement and best-of-n selection

Sub-packages (each imports only what is below it in this list):
    export/        the RL bundle: `launch.py export` writes it, RL code reads it (public: loop.export)
    report/        `launch.py report`: summary and plots (training.png: the trainer's steps)
    cluster/       Ray: the driver, the sampler pool, placement, and the vLLM and trainer workers
    kernels/       optional fast paths of training (fused LoRA, Liger, packed attention)
    run/           a run is a directory: state, manifest, logs, progress, trackers (run.report_to), faults
    models/        the embedded tiny model and random-weight models of a real shape (apart)

The layers: launch.py > export, report, runner > controller, steps, analysis, preflight >
cluster > kernels > config, plugins > verifiers, generators, policies > records, registry, run.
"""
