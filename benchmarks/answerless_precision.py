"""How often were the chains accepted on the learned verifier's word right? For a run with
`learned_verifier.answerless: [arithmetic/sub]`, whose training problems had their gold answers withheld.

    python benchmarks/answerless_precision.py state/runs/<run>

Per round: the chains accepted (round-NNN/answerless.json), how many of them are right, and how many of all the
category's chains are right (the base rate an acceptance rule has to beat). Right = the final answer equals a - b,
recomputed from the problem's own text (so arithmetic/sub only; the loop itself never saw these answers).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit(__doc__)
    for rd in sorted(Path(sys.argv[1]).glob("round-*")):
        if not (rd / "answerless.json").exists():
            continue
        ids = set(json.loads((rd / "answerless.json").read_text()).get("sample_ids") or [])
        problems = {p["id"]: p for p in map(json.loads, (rd / "problems.jsonl").read_text().splitlines())}
        took, every = [0, 0], [0, 0]  # [chains, right]: the accepted ones, all of the category's
        for s in map(json.loads, (rd / "samples.jsonl").read_text().splitlines()):
            p = problems.get(s["problem_id"])
            if not p or p["category"] != "sub" or s.get("hinted") or s.get("gold"):
                continue
            a, b = map(int, re.search(r"(\d+)-(\d+)", p["prompt"][-1]["content"]).groups())
            got = re.search(r"Answer:\s*(-?\d+)", s["text"])
            right = bool(got) and int(got.group(1)) == a - b
            for tally in (took, every) if s["id"] in ids else (every,):
                tally[0] += 1
                tally[1] += right
        print(json.dumps({"round": rd.name, "accepted": took[0], "accepted_right": took[1],
                          "accepted_precision": round(took[1] / took[0], 3) if took[0] else None,
                          "chains": every[0], "base_rate": round(every[1] / every[0], 3) if every[0] else None}))


if __name__ == "__main__":
    main()
