"""The LLM judge with a plain Python function as its engine."""
import json

import pytest

from loop.records import ERROR_CLASSES, ErrorRecord, Message, Problem, Reference, Row, Sample, Verdict
from verifiers import VERIFIERS, safe_verify
from verifiers.judge_prompts import parse_class, parse_reason, parse_verdict


def prob(answer="132", q="What is 12 * 11?"):
    return Problem(family="t", category="c", difficulty=1, prompt=[Message(role="user", content=q)],
                   reference=Reference(answer=answer))


def samp(text, i=0):
    return Sample(id=f"p:r0:{i}", problem_id="p", round=0, index=i, text=text, num_tokens=5, finish_reason="stop")


class Engine:
    """Replies by looking at the prompt; records every call."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def __call__(self, prompts, max_tokens):
        self.calls.append(len(prompts))
        return [self.reply(p[-1]["content"]) for p in prompts]


def judge(engine=None, **options):
    j = VERIFIERS.build("llm_judge", options)
    if engine is not None:
        j.bind_engine(engine)
    return j


GOOD = "<think>\n12 * 11 = 132\n</think>\nAnswer: 132"
BAD = "<think>\n12 * 11 = 131\n</think>\nAnswer: 131"


@pytest.mark.parametrize("reply, want", [
    ("REASON: fine\nVERDICT: PASS", "pass"),
    ("verdict : fail", "fail"),
    ("**Verdict:** Pass", "pass"),
    ("VERDICT:PASS ... wait, no. VERDICT: FAIL", "fail"),
    ('Reply "VERDICT: PASS" or "VERDICT: FAIL".', None),
    ("VERDICT: PASS/FAIL", None),
    ("passpasspass fail", None),
    ("", None),
    ("\x00\x01 verdictpassword", None),
    (None, None),
])
def test_parse_verdict(reply, want):
    assert parse_verdict(reply) == want


@pytest.mark.parametrize("reply, want", [
    ("REASON: slip\nCLASS: calculation", "calculation"),
    ("class : Logic", "logic"),
    ("Class: arithmetic", "calculation"),
    ("CLASS: format\nCLASS: comprehension", "comprehension"),
    ("CLASS: infra", None),
    ("CLASS: banana", None),
    ("classification unclear", None),
    ("", None),
])
def test_parse_class(reply, want):
    assert parse_class(reply) == want
    assert want is None or want in ERROR_CLASSES


def test_parse_reason_last_occurrence():
    assert parse_reason("REASON: a\nREASON: b\nVERDICT: PASS") == "b"
    assert parse_reason("garbage") == ""


def test_verdicts_from_replies_and_evidence():
    eng = Engine(lambda c: "REASON: the product is right\nVERDICT: PASS" if "Answer: 132" in c
                 else "REASON: 12*11 is 132\nVERDICT: FAIL")
    out = judge(eng).verify([prob(), prob()], [samp(GOOD, 0), samp(BAD, 1)])
    assert [v.outcome for v in out] == ["pass", "fail"] and [v.score for v in out] == [1.0, 0.0]
    assert out[0].reason == "the product is right" and out[1].evidence["answer"] == "131"
    assert out[1].evidence["gold"] == "132" and out[1].evidence["judge_reply"].endswith("FAIL")


def test_garbage_reply_abstains_never_passes():
    eng = Engine(lambda c: "pass pass PASS !!! <think> passed")
    [v] = judge(eng).verify([prob()], [samp(GOOD)])
    assert v.outcome == "abstain" and "unparseable" in v.reason


def test_no_answer_fails_without_asking():
    eng = Engine(lambda c: "VERDICT: PASS")
    [v] = judge(eng).verify([prob()], [samp("<think>\nstill going")])
    assert v.outcome == "fail" and eng.calls == []


def test_unbound_engine_abstains():
    j = judge()
    out = j.verify([prob(), prob()], [samp(GOOD, 0), samp(BAD, 1)])
    assert [v.outcome for v in out] == ["abstain", "abstain"] and out[0].reason == "no judge engine bound"
    assert j.classify([{"problem": prob(), "sample": samp(BAD)}]) == [(None, "no judge engine bound")]


def test_cache_engine_called_once_for_repeated_content_and_batched():
    eng = Engine(lambda c: "VERDICT: PASS")
    j = judge(eng, batch_size=2)
    problems, samples = [prob()] * 5, [samp(GOOD, i) for i in range(4)] + [samp(BAD, 4)]
    out = j.verify(problems, samples)
    assert [v.outcome for v in out] == ["pass"] * 5
    assert eng.calls == [2]  # two distinct prompts, one batch
    again = j.verify(problems, samples)
    assert eng.calls == [2] and all(v.evidence["cached"] for v in again)
    j.verify([prob()] * 3, [samp(f"<think>x</think>\nAnswer: {k}") for k in range(3)])
    assert eng.calls == [2, 2, 1]  # three new prompts in batches of two


def test_disk_cache_survives_a_new_judge(tmp_path):
    path = tmp_path / "judge.jsonl"
    eng = Engine(lambda c: "VERDICT: FAIL")
    judge(eng, cache_path=str(path)).verify([prob()], [samp(BAD)])
    with path.open("a") as f:
        f.write('{"key": "torn')  # a torn last line is skipped
    eng2 = Engine(lambda c: "VERDICT: PASS")
    [v] = judge(eng2, cache_path=str(path)).verify([prob()], [samp(BAD)])
    assert v.outcome == "fail" and v.evidence["cached"] and eng2.calls == []
    assert json.loads(path.read_text().splitlines()[0])["reply"] == "VERDICT: FAIL"
    [v] = judge(eng2, cache_path=str(path), cache_tag="other-model").verify([prob()], [samp(BAD)])
    assert v.outcome == "pass" and eng2.calls == [1]


def test_engine_failure_is_error_not_fail():
    def broken(prompts, max_tokens):
        raise RuntimeError("CUDA out of memory")

    out = safe_verify(judge(broken), [prob()], [samp(GOOD)])
    assert out[0].outcome == "error" and "out of memory" in out[0].reason
    short = judge(lambda prompts, max_tokens: [])  # wrong reply count
    assert short.verify([prob()], [samp(GOOD)])[0].outcome == "error"


def test_one_prompt_the_engine_cannot_take_fails_only_itself():
    """An engine answers an Exception for the one prompt it could not run (too long for its
    context): that sample's verdict is `error`, its neighbours in the batch are judged, and
    nothing is cached for it."""
    eng = Engine(lambda c: ValueError("judge prompt longer than model.max_model_len") if "131" in c
                 else "VERDICT: PASS")
    j = judge(eng, batch_size=8)
    out = j.verify([prob()] * 3, [samp(GOOD, 0), samp(BAD, 1), samp(GOOD.replace("132", "132.0"), 2)])
    assert [v.outcome for v in out] == ["pass", "error", "pass"]
    assert "max_model_len" in out[1].reason and eng.calls == [3]
    j.verify([prob()], [samp(BAD, 1)])
    assert eng.calls == [3, 1]  # asked again: an error reply is never cached


def test_classify_maps_replies_and_accepts_rows():
    def reply(c):
        if "131" in c:
            return "REASON: the product is off by one\nCLASS: calculation"
        return "I am a tiny model and I like trains"

    eng = Engine(reply)
    j = judge(eng)
    bad, odd = samp(BAD, 0), samp("<think>\nhm\n</think>\nAnswer: 7", 1)
    fail_v = Verdict(sample_id=bad.id, verifier="process", outcome="fail", reason="line 2: 12 * 11 = 131")
    row = Row(problem=prob(), sample=bad, verdicts=[fail_v], outcome="fail",
              error=ErrorRecord(sample_id=bad.id, problem_id="p", category="c", error_class="other",
                                decided_by="rule"))
    out = j.classify([row, {"problem": prob(), "sample": odd}])
    assert out[0] == ("calculation", "the product is off by one")
    assert out[1][0] is None and "unparseable" in out[1][1]
    assert j.classify([]) == []


def test_classify_prompt_shows_failing_checks():
    seen = []
    eng = Engine(lambda c: seen.append(c) or "CLASS: logic")
    v = Verdict(sample_id="s", verifier="process", outcome="fail", reason="1 of 1 steps wrong")
    judge(eng).classify([{"problem": prob(), "sample": samp(BAD), "verdicts": [v]}])
    assert "process: fail: 1 of 1 steps wrong" in seen[0] and "calculation" in seen[0]
