"""bnconf command line. Exit status: 0 ok / conforms (SHOULD clauses not met are warnings),
1 a MUST clause is violated or the audit found unexpected results (with --strict: a warning
too), 2 usage, import or configuration error (with a message), 3 bnconf could not judge a
clause (its own error, with the traceback), 130 interrupted (no verdict)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3


def _err(msg: str) -> int:
    print(f"bnconf: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_spec(args) -> int:
    from bnconf.spec.loader import get_spec
    from bnconf.spec.render import anchor, render
    spec = get_spec(args.spec)
    if args.render or args.check:
        text = render(spec)
        target = Path(args.output) if args.output else Path(spec.path).with_name("SPEC.md")
        if args.check:
            current = target.read_text(encoding="utf-8") if target.exists() else ""
            if current != text:
                return _err(f"{target} is out of date; run `bnconf spec --render`")
            print(f"{target} is up to date")
            return EXIT_OK
        from bnconf.results.records import atomic_write_text
        atomic_write_text(target, text)
        print(f"wrote {target}")
        return EXIT_OK
    if args.id:
        c = spec.clause(args.id)
        applies = [p for p, prof in spec.profiles.items() if c.applies_to(prof)]
        print(f"{c.id}: {c.title}  [{c.level}]")
        print(f"link: spec/SPEC.md#{anchor(c.id)}   (spec/batchnorm.yaml line {spec.lines[c.id]})")
        print(f"modes: {', '.join(c.modes)}; profiles: {', '.join(applies)}")
        if c.planned:
            print(f"planned: {c.planned}")
        print()
        print(c.text)
        print()
        print(f"equation: {c.equation}")
        print("sources: " + "; ".join(c.sources))
        return EXIT_OK
    for c in spec.clauses.values():
        tag = " (planned)" if c.planned else ""
        print(f"{c.id:26s} {c.level:6s} {c.title}{tag}")
    return EXIT_OK


def cmd_lint(args) -> int:
    from bnconf.spec.lint import lint
    from bnconf.spec.loader import get_spec
    spec = get_spec(args.spec)
    problems = lint(spec, args.paths)
    if args.emissions:
        from bnconf.spec.emissions import lint_emissions
        problems += lint_emissions(spec)
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s) in {len(spec.clauses)} clauses")
    return EXIT_VIOLATION if problems else EXIT_OK


def _select(args):
    from bnconf.running.registry import all_implementations, family_implementations, find
    impls = []
    for fam in args.family or []:
        impls.extend(family_implementations(fam))
    for name in args.impl or []:
        impls.append(find(name))
    if not impls:
        impls = all_implementations()
    seen, out = set(), []
    for i in impls:
        if i.name not in seen:
            seen.add(i.name)
            out.append(i)
    return out


TIERS = {"fast": 100, "thorough": 1000}   # generated cases per clause per implementation


def cmd_run(args) -> int:
    from bnconf.running.runner import RunInterrupted, run_many, summarize
    from bnconf.spec.loader import get_spec
    get_spec(args.spec)  # a malformed spec stops the run before anything starts
    impls = _select(args)
    out = Path(args.out)
    try:
        summary = run_many(impls, out, max_examples=args.max_examples, seed=args.seed, timeout_s=args.timeout,
                           repro_dir=args.repro_dir, resume=args.resume, spec=args.spec,
                           echo=lambda m: print(m, flush=True), quota=args.cases_per_clause or TIERS[args.tier],
                           jobs=args.jobs)
    except RunInterrupted as exc:
        print(f"bnconf: interrupted; {out} keeps what was recorded before it; not recorded: "
              f"{', '.join(exc.not_done) or 'none'} (`bnconf run --resume` continues)", file=sys.stderr)
        return 130
    print(f"{out}: {summarize(out)}")
    bad = sum(s["bad"] for s in summary)
    return EXIT_VIOLATION if bad and args.strict else EXIT_OK


def cmd_report(args) -> int:
    from bnconf.report.assemble import build_report
    # raw/: this machine's records (not committed); gpu/: the GPU half, measured on a machine
    # with a GPU (scripts/gpu_audit.sh) and committed, since most machines have none. The GPU
    # half is archived: counted only when it carries the commit of the raw records.
    out = Path(args.out_dir)
    raws = args.raw or sorted(str(p) for p in (out / "raw").glob("*.jsonl"))
    archived = list(args.archived or []) + ([] if args.raw else sorted(str(p) for p in (out / "gpu").glob("*.jsonl")))
    if not raws and not archived:
        return _err(f"no raw results given and none found in {out / 'raw'}/ or {out / 'gpu'}/")
    paths = build_report(raws, out, commit=args.commit, archived_paths=archived)
    for p in paths:
        print(f"wrote {p}")
    rep = json.loads(paths[0].read_text(encoding="utf-8"))
    apart = sum(g["records"] for g in rep["other_runs"])
    groups = len(rep["other_runs"])
    if not rep["summary"]:
        print(f"bnconf: warning: no record of commit {rep['suite']['commit']}: the report counts nothing",
              file=sys.stderr)
    print(f"counted: commit {rep['suite']['commit'] or 'unstamped'} ({rep['suite']['selected']}); "
          f"{apart} record{'' if apart == 1 else 's'} of other runs in {groups} group{'' if groups == 1 else 's'} "
          "listed apart")
    return EXIT_OK


def progress_bar(total: int | None, label: str):
    """A progress line on stderr when it is a terminal (never in --json output or CI logs).
    total None: the run ends when every clause has its quota, so only the count is shown."""
    if not sys.stderr.isatty():
        return None

    def show(done: int):
        if total is None:
            print(f"\r{label}: {done} cases", end="", file=sys.stderr, flush=True)
            return
        n = min(done, total)
        filled = int(30 * n / max(total, 1))
        print(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} cases", end="", file=sys.stderr,
              flush=True)
        if done >= total:
            print(file=sys.stderr)
    return show


def cmd_audit(args) -> int:
    from bnconf.frontends.user_audit import audit
    from bnconf.running.targets import TargetError
    from bnconf.spec.loader import SpecError
    try:
        rep = audit(args.target, args.profile, kind=args.kind, max_examples=args.max_examples, seed=args.seed,
                    spec_path=args.spec, repro_dir=args.repro_dir, fingerprint=not args.no_fingerprint,
                    progress=progress_bar(None, "auditing"), quota=args.cases_per_clause)
        if sys.stderr.isatty():
            print(file=sys.stderr)
    except (TargetError, SpecError) as exc:
        return _err(str(exc))
    except KeyboardInterrupt:
        from bnconf.running.isolated import shutdown
        shutdown()   # the user's code runs in processes of their own, which ignore Ctrl-C
        print(("\n" if sys.stderr.isatty() else "") + "bnconf: interrupted; no verdict (the audit did not finish)",
              file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(rep.to_json(), indent=2, default=str))
    else:
        _print_audit(rep)
    if rep.violations or (args.strict and rep.warnings):
        return EXIT_VIOLATION
    return EXIT_ERROR if rep.errors else EXIT_OK


def _print_audit(rep) -> None:
    """One line per clause; a failing one with what it blocks, its measured error and its
    smallest case (the one helper every finding of the CLI goes through)."""
    print(f"{rep.target} under profile {rep.profile!r}: {rep.verdict.upper()} "
          f"({rep.cases} cases, {rep.seconds:.1f} s)")
    for p in rep.passed:
        print(f"  pass  {p['clause']:24s} {p['cases']} cases")
    for tag, found in (("FAIL", rep.violations), ("WARN", rep.warnings)):
        for v in found:
            print(f"  {tag}  {v['clause']:24s} {v['title']}" + (f"  [{v['level']}]" if tag == "WARN" else ""))
            if v.get("blocks"):
                print(f"        blocks: {', '.join(v['blocks'])} (they fail only because of it)")
            print(f"        {v['message']}")
            print(f"        smallest case (seed {v.get('seed')}): {json.dumps(v['example'])}")
            if v.get("reproducer"):
                print(f"        reproducer: python {v['reproducer']}/repro.py")
    for e in rep.errors:
        print(f"  ERROR {e['clause']:24s} bnconf could not judge it (a bug of bnconf's, not of the target): "
              f"{e['message']}")
        print("        " + e["traceback"].strip().replace("\n", "\n        "))
        print(f"        case: {json.dumps(e['example'])}")
    for b in rep.blocked:
        print(f"  blocked {b['clause']:22s} by {', '.join(b['blocked_by'])}")
    for n in rep.not_exercised:
        print(f"  n/a   {n['clause']:24s} {n['reason']}")
    if rep.fingerprint:
        print("  fingerprint: " + json.dumps(rep.fingerprint))


def cmd_fingerprint(args) -> int:
    from bnconf.running.registry import all_implementations, find, UnknownImplementation
    if args.list:
        for i in all_implementations():
            print(f"{i.name:48s} profile={i.profile:8s} family={i.family}")
        return EXIT_OK
    if not args.target:
        return _err("fingerprint needs a TARGET (or --list)")
    from bnconf.results.fingerprint import fingerprint
    if ":" in args.target:
        from bnconf.running.targets import TargetError, make_implementation
        try:
            impl = make_implementation(args.target, args.profile or "torch", args.kind)
        except TargetError as exc:
            return _err(str(exc))
        fp = fingerprint(impl, default_momentum=False, default_eps=False)  # defaults: not probed, null
    else:
        try:
            impl = find(args.target)
            impl.versions()
        except UnknownImplementation as exc:
            return _err(str(exc))
        except Exception as exc:
            return _err(f"{args.target}: {type(exc).__name__}: {exc}")
        fp = fingerprint(impl)
    if args.json:
        print(json.dumps(fp, indent=2))
    else:
        for k, v in fp.items():
            print(f"{k:24s} {v}")
    return EXIT_OK


def cmd_facts(args) -> int:
    from bnconf.tools.facts import run_facts
    from bnconf.results.provenance import stamp
    from bnconf.results.records import append_jsonl
    recs = [stamp(r) for r in run_facts(args.framework or None)]
    for r in recs:
        print(f"{r['fact']:6s} {r['status']:8s} {r['claim'][:60]}\n       -> {r['observed'][:160]}")
    if args.out:
        from pathlib import Path as _P
        _P(args.out).unlink(missing_ok=True)  # one run's facts, not an accumulation
        append_jsonl(args.out, recs)
    return EXIT_OK


def cmd_known(args) -> int:
    from bnconf.results.known_pin import draft, pin_file
    from bnconf.results.records import atomic_write_text, read_jsonl
    records = read_jsonl(args.raw)
    if args.pin:
        directory = Path(args.known_dir)
        impls = sorted({r.get("implementation") for r in records} & {p.stem for p in directory.glob("*.yaml")})
        for impl in impls:
            text, notes = pin_file(impl, [r for r in records if r.get("implementation") == impl], directory)
            atomic_write_text(directory / f"{impl}.yaml", text)
            print(f"wrote {directory / (impl + '.yaml')}")
            for n in notes:
                print(f"  {n}")
        return EXIT_OK
    for impl, text in draft(records).items():
        print(f"# ---- adapters/known/{impl}.yaml (draft: write each reason and link by hand)")
        print(text)
    return EXIT_OK


def cmd_bench(args) -> int:
    from bnconf.tools.bench import main as bench_main
    return bench_main(args)


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
    p.add_argument("--kind", choices=["numpy", "torch-module"], default="numpy")
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
    p.add_argument("--kind", choices=["numpy", "torch-module"], default="numpy")
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
    import signal
    import threading
    from bnconf.running.audit import INTERRUPTED

    def interrupt(signum, frame):
        INTERRUPTED.set()     # in case this KeyboardInterrupt lands where Python drops it
        raise KeyboardInterrupt
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt)


def main(argv=None) -> int:
    from bnconf.spec.loader import SpecError
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


if __name__ == "__main__":
    sys.exit(main())
