"""The explorer: seeded hypothesis runs over the pinned and generated cases, aimed in rounds
at the clauses short of their quota, tallying every outcome per (clause, dtype)."""
from __future__ import annotations

import hashlib
import json
import threading
import time

import numpy as np
from hypothesis import HealthCheck, Phase, example, given, seed as hseed, settings

from bnconf.running.tally import ClauseTally

# Set by the CLI's SIGINT handler: Python drops an exception raised inside a gc callback
# ("Exception ignored in gc_callback"), so the next case stops the explorer instead.
INTERRUPTED = threading.Event()


def seal_generator() -> None:
    """Make hypothesis draw from the seed alone. Hypothesis (6.13x on) mixes into its draws,
    with probability 0.05 per choice, constants it reads from the source of every "local"
    module imported so far (the user's BN file, bnconf itself in an editable install), and
    caches them in ./.hypothesis/constants: the cases of a seed would then depend on the
    checkout, on what was imported before and on that cache. bnconf's strategies already aim
    at the values that matter (KAPPAS, EPS_VALUES, the degenerate shapes), so the pool is
    emptied. Private API: where a hypothesis version lacks it, there is nothing to seal."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:
        return
    if hasattr(providers, "_get_local_constants"):
        empty = Constants()
        providers._get_local_constants = lambda: empty


class _Enough(BaseException):
    """Every clause has its quota: ends the hypothesis run at once (not an Exception, so
    hypothesis neither reports nor replays it)."""


def explore(strategy, pinned, run, *, max_examples, seed, progress=None, deadline_s=None, stop=None,
            scheduler=None, aimed=None, round_size=20):
    """Run `run(case) -> outcomes` on the pinned cases, then on cases drawn from `strategy`
    (hypothesis, seeded, no example database); tally every outcome per (clause, dtype), a
    case counting once per clause. Returns (tallies, cases run, seconds, (seconds to the
    first failure, its case number), sha256 of the cases in the order they ran): two runs of
    one seed must give the same digest whatever the implementation returned.

    With a scheduler (quota.py) the run goes on in rounds of `round_size` cases, each a
    seeded hypothesis run of `aimed(focus)` at the clauses short of their quota (a strategy
    must not change under hypothesis's feet, so the aim changes between rounds), until none
    is short; max_examples is then the cap on all cases."""
    seal_generator()
    tallies: dict = {}
    count = [0]
    first = [None, None]
    digest = hashlib.sha256()
    t0 = time.perf_counter()
    aim: tuple = ()

    def body(case):
        if INTERRUPTED.is_set():   # a Ctrl-C whose KeyboardInterrupt was swallowed (raised in a gc callback)
            raise KeyboardInterrupt
        if (stop and stop()) or (deadline_s and time.perf_counter() - t0 > deadline_s):
            raise _Enough()
        digest.update(json.dumps(case.to_json(), sort_keys=True).encode() + b"\n")
        outs = run(case)
        count[0] += 1
        per_clause: dict = {}
        for o in outs:
            per_clause.setdefault(o.clause, []).append(o)
            if not o.ok and not o.error and first[0] is None:
                first[0], first[1] = time.perf_counter() - t0, count[0]
        for clause, group in per_clause.items():
            tallies.setdefault((clause, case.dtype), ClauseTally()).add(group, case, count[0])
        if progress:
            progress(count[0])
        if scheduler is not None:
            scheduler.observe(case, aim)
            if scheduler.done() or (aim and all(scheduler.counts[c] >= scheduler.quota for c in aim)):
                raise _Enough()

    def one_run(strat, examples, n, run_seed):
        if n <= 0 and not examples:
            return True
        test = given(strat)(body)
        for c in reversed(examples):
            test = example(c)(test)
        test = settings(max_examples=max(n, 1), database=None, deadline=None, derandomize=False,
                        phases=[Phase.explicit] + ([Phase.generate] if n > 0 else []),
                        suppress_health_check=list(HealthCheck), print_blob=False)(test)
        try:
            hseed(run_seed)(test)()
        except _Enough:
            return not ((stop and stop()) or (deadline_s and time.perf_counter() - t0 > deadline_s))
        return True

    if scheduler is None:
        one_run(strategy, pinned, max_examples, seed)
    else:
        rng = np.random.default_rng([seed, 0x5C])
        going = one_run(strategy, pinned, 0, seed)          # the pinned probes first
        r = 0
        while going and not scheduler.done() and count[0] < max_examples:
            r += 1
            focus, aim = scheduler.choose(lambda n: int(rng.integers(n)))
            going = one_run(aimed(focus) if focus else strategy, [],
                            min(round_size, max_examples - count[0]), seed * 1000 + r)
    return tallies, count[0], time.perf_counter() - t0, tuple(first), digest.hexdigest()


def aimed_strategies(make):
    """focus -> strategy, built once per distinct focus (a run aims at a few dozen)."""
    cache: dict = {}

    def get(focus):
        key = tuple(sorted((k, tuple(v)) for k, v in focus.items()))
        if key not in cache:
            cache[key] = make(focus)
        return cache[key]
    return get
