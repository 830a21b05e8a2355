"""The learned verifier: a LoRA adapter of the policy's own base, trained by the loop from its
programmatic verdicts (V-STaR; a generative verifier), asked "Is this solution correct?".

Its score is P(Yes) of the first reply token, normalised over Yes and No, read from one token of
logprobs on the sampler the loop already runs (loop/cluster/sampler.py `yes_probability`). The
loop trains the adapter (loop/verifier_data.py builds the examples) and binds a scorer here before
verification; without one it abstains and says why. A model can be talked into "Yes": keep it
`required: false` wherever a programmatic check exists; it is meant for ranking (best-of-n) and
for categories with no gold answer, where acceptance says which chains were taken on its word.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from loop.records import Problem, Sample, Verdict
from verifiers.base import VERIFIERS, Verifier
from verifiers.untrusted import quote

Messages = list[dict[str, str]]
# prompts -> P(Yes) per prompt; None: the reply's first token was neither Yes nor No (or the
# prompt did not fit the window); an Exception: the engine failed on that prompt.
Score = Callable[[list[Messages]], list]

QUESTION = "Is this solution correct? Answer Yes or No."
YES, NO = "Yes", "No"
NO_ADAPTER = ("no verifier adapter yet: the loop trains one from round 0's pass/fail verdicts "
              "(learned_verifier.enabled), so verdicts start in round 1")


def verification_content(task: str, text: str, max_chain_chars: int) -> str:
    """The verifier's user turn for one chain: the task, the chain, the question (also the RL bundle's reward
    function's). The chain is quoted (verifiers/untrusted.py): one that spells a control token cannot close
    the question's turn."""
    return f"{task}\n\nSolution:\n{quote(text, max_chain_chars)}\n\n{QUESTION}"


def verification_messages(problem: Problem, text: str, max_chain_chars: int) -> Messages:
    """The verifier's prompt for one chain. The gold answer is never shown (the verifier must judge
    chains of problems that have none)."""
    task = "\n".join(m.content for m in problem.prompt if m.role == "user")
    return [{"role": "user", "content": verification_content(task, text, max_chain_chars)}]


@VERIFIERS.register("learned")
class LearnedVerifier(Verifier):
    """A verifier adapter trained by the loop on its own verdicts; score = P(Yes) (needs learned_verifier.enabled)."""

    description = "a LoRA verifier trained each round on the loop's pass/fail verdicts; score = P(Yes)"
    needs_engine = True

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        threshold: float = Field(0.5, gt=0, lt=1, description="P(Yes) at or above this is `pass`")
        max_chain_chars: int = Field(1200, ge=100, description="longer chains are cut in the middle")

    def __init__(self, options: BaseModel):
        super().__init__(options)
        self._score: Score | None = None
        self._adapter: str | None = None
        self._why_unbound = NO_ADAPTER

    def bind_engine(self, generate) -> None:
        """The judge's text engine is not what this verifier needs (see bind_scorer)."""

    def bind_scorer(self, score: Score | None, adapter: str | None = None, why: str = NO_ADAPTER) -> None:
        self._score, self._adapter, self._why_unbound = score, adapter, why

    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        if self._score is None:
            return [self.verdict(s, "abstain", 0.0, self._why_unbound) for s in samples]
        prompts = [verification_messages(p, s.text, self.options.max_chain_chars) for p, s in zip(problems, samples)]
        scores = self._score(prompts)
        if len(scores) != len(samples):
            raise RuntimeError(f"the scorer returned {len(scores)} scores for {len(samples)} chains")
        out = []
        for s, p_yes in zip(samples, scores):
            if isinstance(p_yes, Exception):
                out.append(self.verdict(s, "error", 0.0, f"verifier engine failed: {type(p_yes).__name__}: {p_yes}",
                                        adapter=self._adapter))
            elif p_yes is None:
                out.append(self.verdict(s, "abstain", 0.0, "the verifier's first reply token was neither Yes nor "
                                        "No (or the prompt did not fit the window)", adapter=self._adapter))
            else:
                ok = p_yes >= self.options.threshold
                out.append(self.verdict(s, "pass" if ok else "fail", float(p_yes),
                                        f"P(Yes) {p_yes:.3f} {'>=' if ok else '<'} {self.options.threshold:g}",
                                        p_yes=float(p_yes), adapter=self._adapter))
        return out
