from verifiers import (  # noqa: F401  (register)
    answer,
    code,  # noqa: F401,E402  (register code_tests)
    format_check,
    judge,
    learned,
    math_equiv,
    process,
    rg_score,
)
from verifiers.base import VERIFIERS, Verifier, as_reward_func, safe_verify  # noqa: F401
