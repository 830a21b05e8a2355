"""Stopping policies: when the loop has stopped paying off."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from policies.base import POLICIES, StoppingPolicy


@POLICIES.register("patience")
class Patience(StoppingPolicy):
    """Stop when held-out accuracy has not improved by min_delta for `patience` rounds."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        patience: int = Field(2, ge=1, description="rounds without improvement before stopping")
        min_delta: float = Field(
            0.01, ge=0, description="smallest gain over the best so far that counts as improvement")

    def should_stop(self, heldout_history: list[float]) -> tuple[bool, str]:
        if len(heldout_history) < 2:
            return False, "no round evaluated yet"
        o = self.options
        best, best_at, since = heldout_history[0], 0, 0
        for i, acc in enumerate(heldout_history[1:], start=1):
            if acc >= best + o.min_delta - 1e-12:
                best, best_at, since = acc, i, 0
            else:
                since += 1
        where = "the baseline" if best_at == 0 else f"round {best_at - 1}"
        if since >= o.patience:
            return True, (f"held-out accuracy has not improved by {o.min_delta} for {since} rounds "
                          f"(best {best:.3f} at {where}, last {heldout_history[-1]:.3f})")
        return False, (f"{since} of {o.patience} rounds without improvement "
                       f"(best {best:.3f} at {where}, last {heldout_history[-1]:.3f})")


@POLICIES.register("never")
class Never(StoppingPolicy):
    """Never stop early: run all configured rounds."""

    def should_stop(self, heldout_history: list[float]) -> tuple[bool, str]:
        return False, "stopping policy 'never': running all configured rounds"
