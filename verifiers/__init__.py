from verifiers.base import VERIFIERS, Verifier, safe_verify, as_reward_func  # noqa: F401
from verifiers import answer, format_check, process, math_equiv, rg_score, judge  # noqa: F401  (register)
from verifiers import code  # noqa: F401,E402  (register code_tests)
