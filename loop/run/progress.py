"""Progress of long stages: one updating tqdm line on a terminal; elsewhere (a pipe, a CI log) log lines,
few of them: one when a call ends, one every `EVERY_S` during a long call, and calls with the same
description that end within `EVERY_S` of the last line shown (the judge's many batches) are summed
into one line, shown when the next is due or the stage ends. The lines held back go to run.log (DEBUG)."""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from loop.run.state import STAGE_END, check_interrupted

log = logging.getLogger("loop")
EVERY_S = 30.0


class _Held:
    """Calls of one description that ended since its last line on the console."""

    def __init__(self, unit: str):
        self.unit, self.calls, self.items, self.t0 = unit, 0, 0, time.time()


_shown: dict[str, float] = {}  # description -> when its last line was shown
_held: dict[str, _Held] = {}


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def flush() -> None:
    """Show the held-back sums (at the end of each stage, so a stage's last line is never lost)."""
    for desc, h in list(_held.items()):
        log.info("%s: %d %s in %d calls (%.0fs)", desc, h.items, _plural(h.unit), h.calls, time.time() - h.t0)
    _held.clear()
    _shown.clear()


STAGE_END.append(flush)


class _LogBar:
    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit, self.n, self.t0 = total, desc, unit, 0, time.time()
        self.last = self.t0

    def update(self, k: int = 1) -> None:
        check_interrupted()
        self.n += k
        now = time.time()
        line = f"{self.desc}: {self.n}/{self.total} {_plural(self.unit)} ({now - self.t0:.0f}s)"
        if self.total and self.n >= self.total:
            self._done(now, line)
        elif now - self.last >= EVERY_S:  # a long call: a line every EVERY_S
            log.info("%s", line)
            self.last = _shown[self.desc] = now

    def _done(self, now: float, line: str) -> None:
        held = _held.get(self.desc)
        # shown: a call that showed lines of its own (its end closes them), or none shown for EVERY_S
        if held is None and (self.last > self.t0 or now - _shown.get(self.desc, 0.0) >= EVERY_S):
            log.info("%s", line)
            _shown[self.desc] = now
            return
        log.debug("%s", line)  # run.log has every call
        if held is None:
            held = _held[self.desc] = _Held(self.unit)
            held.t0 = self.t0
        held.calls += 1
        held.items += self.total
        if now - _shown.get(self.desc, 0.0) >= EVERY_S:
            log.info("%s: %d %s in %d calls (%.0fs)", self.desc, held.items, _plural(self.unit), held.calls,
                     now - held.t0)
            del _held[self.desc]
            _shown[self.desc] = now


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
