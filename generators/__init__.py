"""Task families; importing the package registers every family in GENERATORS."""
from generators import arithmetic, code_jsonl, files, humaneval, reasoning_gym_family, rules  # noqa: F401  (register families)  # noqa: F401,E402  (register code families)
from generators.base import GENERATORS, Generator, draw  # noqa: F401
