"""bnconf command line. Exit status: 0 ok / conforms (SHOULD clauses not met are warnings),
1 a MUST clause is violated or the audit found unexpected results (with --strict: a warning
too), 2 usage, import or configuration error (with a message), 3 bnconf could not judge a
clause (its own error, with the traceback), 130 interrupted (no verdict)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from bnconf.frontends.commands import (EXIT_OK, TIERS, _err, cmd_audit, cmd_bench, cmd_facts, cmd_fingerprint,
                                       cmd_known, cmd_lint, cmd_report, cmd_run, cmd_spec)
from bnconf.running.explore import INTERRUPTED
from bnconf.running.targets import KINDS
from bnconf.spec.loader import SpecError


def _target_options(p) -> None:
    """How bnconf calls a user's BN and which layouts it covers: one set for audit and fingerprint."""
    p.add_argument("--kind", choices=KINDS, default="numpy",
                   help="numpy: the bnconf NumPy signature; numpy-function: a NumPy function in its own signature "
                        "(see --call, --backward); torch-function: a function on tensors (see --call); "
                        "torch-module: an nn.Module subclass (see --init); jax-function: a function on JAX arrays "
                        "(see --call; run under jax.jit, gradients by jax.vjp); keras-layer: a Keras 3 Layer subclass "
                        "(see --init; the backend KERAS_BACKEND selects)")
    p.add_argument("--call", default=None, metavar="EXPR",
                   help="numpy-, torch-, jax-function: how to call it, e.g. \"bn(X=x, gamma=shaped(weight), "
                        "beta=shaped(bias), moving_mean=shaped(running_mean), moving_var=shaped(running_var), eps=eps, "
                        "momentum=momentum)\"; numpy-function: kept(...) is a dict kept across calls (bn_param)")
    p.add_argument("--returns", default=None, metavar="NAMES",
                   help="what its tuple holds, e.g. \"y, running_mean, running_var\" or \"y, cache\" (_ for others)")
    p.add_argument("--backward", default=None, metavar="EXPR",
                   help="numpy-function: its hand-written backward pass, e.g. \"batchnorm_backward(dy, cache)\" "
                        "-> (dx, dgamma, dbeta) (names: dy, x, weight, bias and the --returns items)")
    p.add_argument("--init", default=None, metavar="EXPR",
                   help="torch-module, keras-layer: how to build it, e.g. \"BatchNorm(num_features, num_dims=rank)\" "
                        "(names: num_features, rank, momentum, eps; keras-layer also axis)")
    p.add_argument("--layouts", default=None, metavar="NC,NCHW,...",
                   help="the layouts your code supports (N batch, C features, L/D/H/W spatial, in axis order: "
                        "NC NCL NCHW NCDHW NLC NHWC NDHWC); default: every one it does not refuse by raising "
                        "NotImplementedError")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bnconf", description="Batch Normalization conformance spec and audit.")
    ap.add_argument("--spec", default=None, help="a spec YAML other than the bundled one")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("spec", help="list the clauses, print one, or render spec/SPEC.md")
    p.add_argument("id", nargs="?")
    p.add_argument("--render", action="store_true", help="write the rendered Markdown spec")
    p.add_argument("--check", action="store_true", help="fail if the rendered spec is out of date")
    p.add_argument("--output", default=None)
    p.set_defaults(fn=cmd_spec)

    p = sub.add_parser("lint", help="clause IDs cited but undefined, or defined but untested")
    p.add_argument("paths", nargs="*", default=["conformance", "adapters", "tests"])
    p.add_argument("--emissions", action="store_true",
                   help="also audit the fixture grid (~1.5 min) and hold the spec's `check` and each check's "
                        "declared clauses to what the checks emit")
    p.set_defaults(fn=cmd_lint)

    p = sub.add_parser("run", help="audit built-in implementations, each in its own process")
    p.add_argument("--family", action="append", help="torch, tensorflow, jax, onnx, snippets (repeatable)")
    p.add_argument("--impl", action="append", help="an implementation name (repeatable)")
    p.add_argument("--out", default="reports/raw/results.jsonl")
    p.add_argument("--tier", choices=sorted(TIERS), default="fast",
                   help="fast: 100 cases per clause per implementation; thorough: 1000")
    p.add_argument("--cases-per-clause", type=int, default=None, help="overrides the tier")
    p.add_argument("--max-examples", type=int, default=None, help="cap on all cases (default 20 x cases-per-clause)")
    p.add_argument("--jobs", type=int, default=None, help="implementations audited side by side "
                   "(default BNCONF_JOBS or one per core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per implementation")
    p.add_argument("--repro-dir", default="reports/repro")
    p.add_argument("--resume", action="store_true", help="keep records already in --out, skip their implementations")
    p.add_argument("--strict", action="store_true", help="exit 1 on unexpected results")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("report", help="build reports/report.{json,md,html} from raw results")
    p.add_argument("raw", nargs="*", help="raw JSONL files (default: OUT_DIR/raw/*.jsonl, with OUT_DIR/gpu/*.jsonl "
                   "archived)")
    p.add_argument("--out-dir", default="reports")
    p.add_argument("--archived", nargs="+", action="extend", default=None, metavar="JSONL",
                   help="records kept from other machines: counted only when they carry the counted commit")
    p.add_argument("--commit", default=None, help="count the records of this bnconf commit (a prefix will do; "
                   "default: the newest commit among the raw records)")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("audit", help="audit your own BN function or torch module")
    p.add_argument("target", help="path/to/file.py:NAME or package.module:NAME")
    p.add_argument("--profile", required=True)
    _target_options(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--cases-per-clause", type=int, default=100,
                   help="at least this many generated cases per clause (aimed at rare clauses)")
    p.add_argument("--max-examples", type=int, default=None, help="cap on all cases (default 20 x cases-per-clause)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repro-dir", default=None, help="write a standalone reproducer per violation here")
    p.add_argument("--no-fingerprint", action="store_true")
    p.add_argument("--strict", action="store_true", help="a SHOULD clause not met fails the audit too (exit 1)")
    p.set_defaults(fn=cmd_audit)

    p = sub.add_parser("fingerprint", help="measure the conventions an implementation follows")
    p.add_argument("target", nargs="?")
    p.add_argument("--list", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", default=None)
    _target_options(p)
    p.set_defaults(fn=cmd_fingerprint)

    p = sub.add_parser("facts", help="check the API facts the source documents state")
    p.add_argument("--framework", action="append", help="torch, tensorflow (default: all installed)")
    p.add_argument("--out", default=None, help="append the fact records to this JSONL")
    p.set_defaults(fn=cmd_facts)

    p = sub.add_parser("known", help="pin known-deviation entries to a run's cases, or draft new ones")
    p.add_argument("raw", nargs="+")
    p.add_argument("--draft", action="store_true", help="print YAML drafts for unlisted failures (the default)")
    p.add_argument("--pin", action="store_true",
                   help="rewrite each listed implementation's file: one entry per deviation kind, its case pinned")
    p.add_argument("--known-dir", default="adapters/known", help="the known-deviation folder to rewrite (--pin)")
    p.set_defaults(fn=cmd_known)

    p = sub.add_parser("bench", help="measure speed and detection power")
    p.add_argument("--json-out", default="reports/bench.json")
    p.add_argument("--fault-seeds", default="0-9", help="seeds of the seeded-fault audits (e.g. 0-9 or 0,3)")
    p.add_argument("--correct-seeds", default="0-49", help="seeds of the correct-kernel audits")
    p.add_argument("--tox", action="store_true", help="also run the default `tox` audit and measure its wall time "
                   "and peak memory (about 10 minutes; run `tox` once before so that environments are warm)")
    p.add_argument("--no-impls", action="store_true", help="skip the per-implementation table")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_bench)
    return ap


def _sigint_interrupts() -> None:
    """A shell starts a background job (`bnconf audit ... &` in a script, a CI step) with SIGINT
    ignored, and Python keeps it ignored: Ctrl-C or `kill -INT` then did nothing and the audit
    ran on to a verdict. An audit or a run is stopped by SIGINT wherever it was started."""
    def interrupt(signum, frame):
        INTERRUPTED.set()     # in case this KeyboardInterrupt lands where Python drops it
        raise KeyboardInterrupt
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _sigint_interrupts()
    try:
        return args.fn(args)
    except SpecError as exc:
        return _err(str(exc))
    except BrokenPipeError:  # `bnconf spec | head`
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("bnconf: interrupted; records already written are kept", file=sys.stderr)
        return 130
    except Exception:
        # A Ctrl-C that lands inside a library's own bookkeeping can come out as that library's
        # error (hypothesis: "assert state._runner is not None"): after a SIGINT it is the
        # interrupt, not a finding and not a crash of bnconf.
        if INTERRUPTED.is_set():
            print("bnconf: interrupted; records already written are kept", file=sys.stderr)
            return 130
        raise


if __name__ == "__main__":
    sys.exit(main())
