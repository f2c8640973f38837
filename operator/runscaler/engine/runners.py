"""The arithmetic of a reconcile pass over the book's records.

Kept apart from the scaler's I/O so the rules (what counts as capacity, which runners go first
on a scale-down, when a rolling replacement may surge) are plain functions over plain data.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from runscaler.engine.book import RunnerRecord, RunnerState

__all__ = ["PassPlan", "RunnerRecord", "RunnerState", "new_runner_name", "plan_pass"]


def new_runner_name(scale_set_name: str) -> str:
    """`<scale set name>-<8 random hex>`: unique, never reused, at most 64 characters."""
    return f"{scale_set_name[:55]}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class PassPlan:
    """What one reconcile pass does."""

    start: int = 0
    remove: tuple[str, ...] = ()


def plan_pass(
    records: Iterable[RunnerRecord],
    *,
    desired: int,
    max_runners: int,
    template_hash: str,
    may_start: bool,
) -> PassPlan:
    """Decide starts and removals for one pass.

    - Capacity is every starting, idle or busy runner, and a runner whose process ended with
      its job before the job's completion was seen (for a short hold); starts fill the gap.
    - Removals consider only running runners (not ones still starting), so a rolling
      replacement removes an old idle runner only once its replacement is up
      (make-before-break), and never a busy one.
    - Idle runners with an old template are replaced: while there is room under
      `max_runners` a new runner starts first, then the surplus check removes the old one.
    """
    items = list(records)
    starting = [r for r in items if r.state is RunnerState.STARTING]
    idle = [r for r in items if r.state is RunnerState.IDLE and r.op is None]
    capacity = sum(1 for r in items if r.counts)
    running = capacity - len(starting)
    stale_idle = [r for r in idle if r.template_hash != template_hash]

    start = max(0, min(desired, max_runners) - capacity) if may_start else 0
    surplus = running - desired
    if surplus > 0:
        # Old template first, then the youngest (the oldest has been waiting longest for a job
        # and is likeliest to be picked next; removing young ones keeps warm runners warm).
        ordered = stale_idle + sorted(
            (r for r in idle if r.template_hash == template_hash),
            key=lambda r: r.created_at,
            reverse=True,
        )
        return PassPlan(start=start, remove=tuple(r.name for r in ordered[:surplus]))
    if stale_idle and not starting:
        if capacity < max_runners:
            if may_start:  # surge; the surplus check removes the old ones once these run
                start = max(start, min(len(stale_idle), max_runners - capacity))
            return PassPlan(start=start)
        # No room to surge: replace in place, one at a time.
        return PassPlan(start=start, remove=(stale_idle[0].name,))
    return PassPlan(start=start)
