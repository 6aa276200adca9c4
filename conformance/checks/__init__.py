"""Clause checks: one trace of one case in, one outcome per clause out.

Each check compares one quantity of the trace with the oracle under the implementation's
profile, using the tolerance model; a deviation is attributed (attribution.py) to the clause
it belongs to. Checks never raise on bad implementation output.

The single-device families register their checks (registry.py) as they are imported, and the
registration order is the order run_checks runs them in: a convention one check measures
(ctx.eff) is what the checks after it judge under, so one convention deviation is one finding.
The order below is therefore part of the behaviour; keep it.
"""
from bnconf.checks import forward
from bnconf.checks import running_statistics
from bnconf.checks import evaluation
from bnconf.checks import gradients
from bnconf.checks import purity_and_dtype
from bnconf.checks import degenerate_batches
from bnconf.checks import relations
from bnconf.checks import mode_switch
from bnconf.checks import state_persistence
from bnconf.checks import second_order
from bnconf.checks import freezing
from bnconf.checks import masking
from bnconf.checks import renorm

FAMILIES = (forward, running_statistics, evaluation, gradients, purity_and_dtype, degenerate_batches, relations, mode_switch,
            state_persistence, second_order, freezing, masking, renorm)
