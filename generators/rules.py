"""Rule induction: infer a hidden rule from a few examples, then apply it to a query."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from generators.base import GENERATORS, Generator
from generators.chains import check_request, format_reply, rng_for
from generators.rules_numeric import Puzzle, gravity, numeral_system, unit_conversion
from generators.rules_strings import bit_manipulation, cipher, symbolic
from loop.records import Message, Problem, Reference

MAKERS = {
    "bit_manipulation": bit_manipulation,
    "cipher": cipher,
    "unit_conversion": unit_conversion,
    "numeral_system": numeral_system,
    "symbolic": symbolic,
    "gravity": gravity,
}


@GENERATORS.register("rules")
class Rules(Generator):
    """Rule-induction puzzles (bits, cipher, units, numeral base, symbols, gravity) with worked chains."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        preamble: str = Field("In Alice's Wonderland, ", description="text put before the rule description")
        instruction: str = Field(
            "End your reply with 'Answer: <answer>'.",
            description="appended to the user message; empty string for none")
        categories: list[str] = Field(
            list(MAKERS), min_length=1, description=f"categories to offer, any of: {', '.join(MAKERS)}")

        @field_validator("categories")
        @classmethod
        def _known(cls, v: list[str]) -> list[str]:
            unknown = [c for c in v if c not in MAKERS]
            if unknown:
                raise ValueError(f"unknown rules categories {unknown}; choose from {', '.join(MAKERS)}")
            return v

    def categories(self) -> list[str]:
        return list(self.options.categories)

    def difficulties(self, category: str) -> tuple[int, int]:
        return (1, 5)

    def render(self, category: str, difficulty: int, pz: Puzzle) -> Problem:
        lines = [f"{self.options.preamble}{pz.intro}. Here are some examples:"]
        lines += [f"{x} -> {y}" for x, y in pz.examples]
        lines.append(f"{pz.ask}: {pz.query}")
        if self.options.instruction:
            lines.append(self.options.instruction)
        return Problem(
            family=self.name, category=category, difficulty=difficulty,
            prompt=[Message(role="user", content="\n".join(lines))],
            reference=Reference(answer=pz.answer, chain=format_reply(pz.steps, pz.answer)),
            metadata={"rule": pz.rule, "examples": [list(e) for e in pz.examples], "query": pz.query},
        )

    def generate(self, category: str, difficulty: int, count: int, seed: int) -> list[Problem]:
        check_request(self, category, difficulty)
        rng = rng_for(self.name, category, difficulty, seed)
        return [self.render(category, difficulty, MAKERS[category](rng, difficulty)) for _ in range(count)]
