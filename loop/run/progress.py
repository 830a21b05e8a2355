"""Progress bars for long stages: tqdm on a terminal, a log line per quarter otherwise."""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from loop.run.state import check_interrupted

log = logging.getLogger("loop")


class _LogBar:
    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit, self.n, self.t0, self.next_mark = total, desc, unit, 0, time.time(), 0.25

    def update(self, k: int = 1) -> None:
        check_interrupted()
        self.n += k
        if self.total and (self.n / self.total >= self.next_mark or self.n == self.total):
            unit = self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")
            log.info("%s: %d/%d %s (%.0fs)", self.desc, self.n, self.total, unit, time.time() - self.t0)
            while self.next_mark <= self.n / self.total:
                self.next_mark += 0.25


@contextmanager
def progress(total: int, desc: str, unit: str = "it") -> Iterator:
    if sys.stderr.isatty():
        from tqdm import tqdm

        class Bar(tqdm):
            def update(self, n=1):
                check_interrupted()
                return super().update(n)

        with Bar(total=total, desc=desc, unit=unit, leave=False) as bar:
            yield bar
    else:
        yield _LogBar(total, desc, unit)
