"""What the loop does about each error class: the action vocabulary of the `analyst` targeting policy.

An action changes next round's plan for one category (loop/records.py `CategoryPlan`); the
loop carries it out (loop/steps.py `make_problems`, loop/controller.py `sample` / `train`):

- `more_problems`: part of the category's budget at the neighbouring difficulties (d-1, d+1), the
  rest at d; the category's share of the total already grows with its failures.
- `rationalize`: STaR answer-hinted retries of the category's problems that no sample solved
  (acceptance keeps only correct chains that do not copy the hint).
- `more_tokens`: a larger sampling token budget for the category (x `token_step`, at most
  x `max_token_scale` of sampling.max_tokens).
- `shorter_problems`: part of the category's budget one difficulty lower.
- `format_replay`: training also replays the category's accepted chains from every earlier round
  that the `format` verifier passed (beyond training.replay_rounds).
- `augment`: variants of last round's failed problems through the generator's `augment` hook
  (same skill, new numbers or wording); skipped, with a note, for a family without one.
- `none`: recorded, nothing changes.
"""
from __future__ import annotations

ACTIONS: dict[str, str] = {
    "more_problems": "part of the budget at the neighbouring difficulties (d-1, d+1)",
    "rationalize": "answer-hinted (STaR) retries of the category's unsolved problems",
    "more_tokens": "a larger sampling token budget for the category",
    "shorter_problems": "part of the budget one difficulty lower",
    "format_replay": "train also on earlier rounds' well-formatted accepted chains",
    "augment": "variants of last round's failed problems (the generator's augment hook)",
    "none": "recorded only",
}

DEFAULT_ACTIONS: dict[str, str] = {
    "calculation": "more_problems",
    "logic": "rationalize",
    "truncated": "more_tokens",
    "format": "format_replay",
    "comprehension": "augment",
}
