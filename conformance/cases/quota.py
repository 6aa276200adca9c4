"""Aim each next case at the clauses that are short of their quota.

An audit promises at least `quota` generated cases per clause per implementation. Drawn
blindly, rare conditions (an empty batch, a constant channel, float64, momentum=None) get a
few cases each while the common clauses get hundreds. The scheduler counts, per clause,
the cases whose traits meet the clause's focus (`meets(focus, case)`: the case alone, never
what the implementation returned, so that case i of a seed is the same case for a correct
and a faulty kernel and on every machine), and picks the next case's focus (the conditions a clause
needs, its `focus` in the spec) from the clauses with the largest deficit, merged at random
with other compatible deficits so that one case serves several clauses. A quarter of the
cases stay unaimed (the plain distribution, whose mixtures nobody planned). A clause aimed
at `stall_after` times in a row without being exercised is given up: the report then shows
its real count, never a padded one.
"""
from __future__ import annotations

from typing import Callable


class QuotaScheduler:
    def __init__(self, foci: dict[str, dict], quota: int, merge: Callable[[dict, dict], dict | None],
                 meets: Callable[[dict, object], bool], stall_after: int = 40):
        self.foci, self.quota, self.merge, self.meets, self.stall_after = foci, quota, merge, meets, stall_after
        self.counts = {c: 0 for c in foci}
        self.aimed = {c: 0 for c in foci}      # cases aimed at the clause
        self.misses = {c: 0 for c in foci}     # ... in a row that did not exercise it
        self.given_up: set[str] = set()

    def deficits(self) -> list[str]:
        """Clauses under quota, largest deficit first (ties in clause-ID order: deterministic)."""
        short = [c for c in self.foci if c not in self.given_up and self.counts[c] < self.quota]
        return sorted(short, key=lambda c: (self.counts[c], c))

    def done(self) -> bool:
        return not self.deficits()

    def choose(self, pick: Callable[[int], int]) -> tuple[dict | None, tuple[str, ...]]:
        """(focus, the clauses it aims at) for the next round; (None, ()) for an unaimed one.
        `pick(n)` returns 0..n-1 from the run's seeded generator (reproducible schedules)."""
        short = self.deficits()
        if not short or pick(4) == 0:
            return None, ()
        lead = short[0] if len(short) == 1 or pick(2) else short[pick(len(short))]
        focus, aim = dict(self.foci[lead]), [lead]
        for c in short:   # clauses missing their aims are not merged in: they would drag the lead down with them
            if c != lead and self.misses[c] < 10 and pick(2):
                merged = self.merge(focus, self.foci[c])
                if merged is not None:
                    focus, aim = merged, aim + [c]
        return focus, tuple(aim)

    def observe(self, case, aim: tuple[str, ...] = ()) -> None:
        """A generated case and the clauses it was aimed at; updates counts and the stall
        bookkeeping."""
        exercised = {c for c, focus in self.foci.items() if self.meets(focus, case)}
        for c in exercised:
            self.counts[c] += 1
        for c in aim:
            self.aimed[c] += 1
            self.misses[c] = 0 if c in exercised else self.misses[c] + 1
            if self.misses[c] >= self.stall_after and self.counts[c] < self.quota:
                self.given_up.add(c)

    def summary(self) -> dict:
        return {"quota": self.quota, "stall_after": self.stall_after, "counts": dict(self.counts),
                "given_up": sorted(c for c in self.given_up if self.counts[c] < self.quota)}
