"""`ast.parse` / `ast.literal_eval` for code that runs in several threads at once.

CPython 3.11's AST constructor keeps its recursion-depth counter in state shared by all
threads, so two threads parsing at the same time can fail with "SystemError: AST constructor
recursion depth mismatch" (seen: the code verifier's worker threads, a 2-core machine under
load; a correct HumanEval solution became a sandbox error). Every parse in the verifier's
process goes through one lock; parses are short, so the lock costs nothing measurable.
"""
from __future__ import annotations

import ast
import threading
from typing import Any

_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>", mode: str = "exec") -> ast.AST:
    with _LOCK:
        return ast.parse(source, filename, mode)


def literal_eval(text: str) -> Any:
    with _LOCK:
        return ast.literal_eval(text)
