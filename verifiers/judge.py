"""The LLM judge: does the reasoning justify the answer, and what kind of error is a failure."""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from loop.records import Problem, Sample, Verdict
from verifiers.answer import gold_of
from verifiers.base import VERIFIERS, Verifier
from verifiers.extract import extract_answer
from verifiers.judge_prompts import check_messages, classify_messages, parse_class, parse_reason, parse_verdict

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]
Generate = Callable[[list[Messages], int], list]  # one reply text (or the Exception that stopped it) per prompt
UNBOUND = "no judge engine bound"
SHORTEN_TRIES = 4  # a prompt longer than the window is asked again with its chain cut to half, up to this often


class PromptTooLong(ValueError):
    """What an engine answers for a prompt that does not fit its window: the judge asks again with the
    chain cut shorter in the middle (the problem, the question and the chain's final answer are kept)."""


class ReplyCache:
    """Judge replies keyed by the sha256 of everything that determines them; optionally
    mirrored to an append-only JSONL file (a torn last line is skipped on load)."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.mem: dict[str, str] = {}
        self._loaded = False

    @staticmethod
    def key(*content: Any) -> str:
        blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _load(self) -> None:
        self._loaded = True
        if self.path is None or not self.path.exists():
            return
        bad = 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                self.mem[row["key"]] = row["reply"]
            except (ValueError, KeyError, TypeError):
                bad += 1
        if bad:
            log.warning("judge cache %s: skipped %d unreadable line(s)", self.path, bad)

    def get(self, key: str) -> str | None:
        if not self._loaded:
            self._load()
        return self.mem.get(key)

    def put(self, entries: dict[str, str]) -> None:
        if not self._loaded:
            self._load()
        self.mem.update(entries)
        if self.path is not None and entries:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                for k, reply in entries.items():
                    f.write(json.dumps({"key": k, "reply": reply}, ensure_ascii=False) + "\n")


@VERIFIERS.register("llm_judge")
class LLMJudge(Verifier):
    """An LLM reads the chain and says whether its reasoning justifies the final answer."""

    needs_engine = True

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        mode: Literal["check"] = Field("check", description="'check': does the reasoning justify the answer?")
        batch_size: int = Field(16, ge=1, description="prompts per engine call")
        max_tokens: int = Field(256, ge=1, description="reply length limit")
        include_gold: bool = Field(True, description="show the judge the reference answer")
        max_chain_chars: int = Field(4000, ge=100, description="longer chains are cut in the middle")
        cache_path: str | None = Field(None, description="JSONL file mirroring the reply cache; None = memory only")
        cache_tag: str = Field("", description="part of every cache key: set it to the judge model's name "
                                               "so replies of different judges never mix")

    def __init__(self, options: BaseModel):
        super().__init__(options)
        self._generate: Generate | None = None
        self.cache = ReplyCache(self.options.cache_path)
        self.engine_calls = 0

    def bind_engine(self, generate: Generate) -> None:
        """generate(prompts: list of chat messages, max_tokens) -> one reply text per prompt."""
        self._generate = generate

    # ---- verification ----
    def verify(self, problems: Sequence[Problem], samples: Sequence[Sample]) -> list[Verdict]:
        if self._generate is None:
            return [self.verdict(s, "abstain", 0.0, UNBOUND, gold=gold_of(p)) for p, s in zip(problems, samples)]
        out: list[Verdict | None] = [None] * len(samples)
        asks: list[tuple[int, Messages, dict]] = []
        for i, (p, s) in enumerate(zip(problems, samples)):
            gold = gold_of(p)
            ex = extract_answer(s.text)
            if ex.answer is None:
                out[i] = self.verdict(s, "fail", 0.0, f"no final answer to justify: {ex.reason}", gold=gold,
                                      **ex.evidence())
                continue
            shown = gold if self.options.include_gold else None
            asks.append((i, lambda chars, p=p, s=s, a=ex.answer, g=shown: check_messages(p, s, a, g, chars),
                         dict(gold=gold, **ex.evidence())))
        replies = self._ask_fitting([b for _, b, _ in asks], "check")
        for (i, _, ev), (reply, cached, chars) in zip(asks, replies):
            if chars is not None:
                ev["chain_cut_to_chars"] = chars
            s = samples[i]
            if isinstance(reply, Exception):
                out[i] = self.verdict(s, "error", 0.0, f"judge engine failed: {type(reply).__name__}: {reply}", **ev)
                continue
            verdict = parse_verdict(reply)
            ev.update(judge_reply=reply[:1000], cached=cached)
            if verdict is None:
                out[i] = self.verdict(s, "abstain", 0.0, "unparseable judge reply (no 'VERDICT: PASS|FAIL')", **ev)
            else:
                why = parse_reason(reply) or f"judge says {verdict}"
                out[i] = self.verdict(s, verdict, float(verdict == "pass"), why, **ev)
        return [v for v in out if v is not None]

    # ---- error analysis ----
    def classify(self, rows_info: Sequence[Any]) -> list[tuple[str | None, str]]:
        """The main error class of each failed row, or (None, why) when the judge gave none.

        Each item is a loop.records.Row or a mapping with "problem", "sample" and
        optionally "verdicts"; the failing verdicts' reasons are shown to the judge.
        """
        items = [_row_parts(r) for r in rows_info]
        if self._generate is None:
            return [(None, UNBOUND)] * len(items)
        builders = [lambda chars, p=p, s=s, vs=vs: classify_messages(
            p, s, gold_of(p) if self.options.include_gold else None, vs, chars) for p, s, vs in items]
        out: list[tuple[str | None, str]] = []
        for reply, _cached, _chars in self._ask_fitting(builders, "classify"):
            if isinstance(reply, Exception):
                out.append((None, f"judge engine failed: {type(reply).__name__}: {reply}"))
                continue
            cls = parse_class(reply)
            if cls is None:
                out.append((None, f"unparseable judge reply: {reply[:200]!r}"))
            else:
                out.append((cls, parse_reason(reply) or f"judge says {cls}"))
        return out

    # ---- engine calls with caching and batching ----
    def _ask_fitting(self, builders: list[Callable[[int], Messages]], kind: str
                     ) -> list[tuple[str | Exception, bool, int | None]]:
        """(reply, cached, the chain's shortened length or None) per prompt. builders[i](max_chain_chars)
        makes prompt i; a prompt the engine finds longer than its window is asked again with the
        chain cut to half as many characters (in the middle), up to SHORTEN_TRIES times."""
        chars = self.options.max_chain_chars
        got: list = [(r, c, None) for r, c in self._ask([b(chars) for b in builders], kind)]
        for _ in range(SHORTEN_TRIES):
            again = [i for i, (r, _, _) in enumerate(got) if isinstance(r, PromptTooLong)]
            if not again or chars <= 100:
                break
            chars = max(100, chars // 2)
            for i, (r, c) in zip(again, self._ask([builders[i](chars) for i in again], kind)):
                got[i] = (r, c, chars)
        return got

    def _ask(self, prompts: list[Messages], kind: str) -> list[tuple[str | Exception, bool]]:
        """One reply per prompt (or the exception that prevented it), and whether it was cached.
        Identical prompts are sent once."""
        keys = [ReplyCache.key(kind, self.options.cache_tag, self.options.max_tokens, m) for m in prompts]
        todo: dict[str, Messages] = {}
        for k, m in zip(keys, prompts):
            if self.cache.get(k) is None and k not in todo:
                todo[k] = m
        was_cached = {k: k not in todo for k in keys}
        generate = self._generate
        if generate is None:
            raise RuntimeError(f"{UNBOUND}: call bind_engine(generate) before asking the judge")
        failed: dict[str, Exception] = {}
        pending = list(todo.items())
        for start in range(0, len(pending), self.options.batch_size):
            chunk = pending[start:start + self.options.batch_size]
            try:
                self.engine_calls += 1
                replies = generate([m for _, m in chunk], self.options.max_tokens)
                if not isinstance(replies, (list, tuple)) or len(replies) != len(chunk):
                    got = len(replies) if isinstance(replies, (list, tuple)) else type(replies).__name__
                    raise RuntimeError(f"engine returned {got} replies for {len(chunk)} prompts")
            except Exception as e:  # noqa: BLE001 - the engine is infrastructure; its failure is `error`
                log.warning("judge engine failed on %d prompts: %s", len(chunk), e)
                failed.update({k: e for k, _ in chunk})
                continue
            # a reply may be the exception that stopped that one prompt (e.g. too long for the engine)
            failed.update({k: r for (k, _), r in zip(chunk, replies) if isinstance(r, Exception)})
            self.cache.put({k: r if isinstance(r, str) else "" for (k, _), r in zip(chunk, replies)
                            if not isinstance(r, Exception)})
        return [(failed[k], False) if k in failed else (self.cache.get(k) or "", was_cached[k]) for k in keys]


def _row_parts(row: Any) -> tuple[Problem, Sample, list[Verdict]]:
    if isinstance(row, Mapping):
        return row["problem"], row["sample"], list(row.get("verdicts") or [])
    return row.problem, row.sample, list(getattr(row, "verdicts", []) or [])
