"""Task families; importing the package registers every family in GENERATORS."""
from generators.base import GENERATORS, Generator, draw  # noqa: F401
from generators import arithmetic, rules, reasoning_gym_family, files  # noqa: F401  (register families)
from generators import humaneval, code_jsonl  # noqa: F401,E402  (register code families)
