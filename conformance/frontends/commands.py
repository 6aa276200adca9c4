"""What each `bnconf` subcommand does (the parser and exit statuses are cli.py's)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from bnconf.cases import layouts
from bnconf.frontends.user_audit import audit
from bnconf.report import findings
from bnconf.report.assemble import build_report
from bnconf.results.fingerprint import fingerprint
from bnconf.results.known_pin import draft, pin_file
from bnconf.results.provenance import stamp
from bnconf.results.records import append_jsonl, atomic_write_text, read_jsonl
from bnconf.running.call_templates import TEMPLATE_OPTIONS
from bnconf.running.isolated import make_implementation, shutdown
from bnconf.running.registry import UnknownImplementation, all_implementations, family_implementations, find
from bnconf.running.runner import RunInterrupted, run_many, summarize
from bnconf.running.scope import find_scope
from bnconf.running.targets import TargetError
from bnconf.spec.emissions import lint_emissions
from bnconf.spec.lint import lint
from bnconf.spec.loader import SpecError, get_spec
from bnconf.spec.render import anchor, render
from bnconf.tools.bench import main as bench_main
from bnconf.tools.facts import run_facts

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3


def _err(msg: str) -> int:
    print(f"bnconf: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_spec(args) -> int:
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
    spec = get_spec(args.spec)
    problems = lint(spec, args.paths)
    if args.emissions:
        problems += lint_emissions(spec)
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s) in {len(spec.clauses)} clauses")
    return EXIT_VIOLATION if problems else EXIT_OK


def _select(args):
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
    try:
        declared = layouts.parse(args.layouts) if args.layouts else None
    except ValueError as exc:
        return _err(str(exc))
    try:
        rep = audit(args.target, args.profile, kind=args.kind, max_examples=args.max_examples, seed=args.seed,
                    spec_path=args.spec, repro_dir=args.repro_dir, fingerprint=not args.no_fingerprint,
                    progress=progress_bar(None, "auditing"), quota=args.cases_per_clause, layouts=declared,
                    **{k: getattr(args, k) for k in TEMPLATE_OPTIONS})
        if sys.stderr.isatty():
            print(file=sys.stderr)
    except (TargetError, SpecError) as exc:
        return _err(str(exc))
    except KeyboardInterrupt:
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


def _grouped(entries) -> dict:
    """message -> the configurations that raised it ('layout NCL', 'layout NCHW' -> 'layouts NCL, NCHW')."""
    out: dict = {}
    for o in entries:
        out.setdefault(o["message"], []).append(o["what"])
    for message, whats in out.items():
        if len(whats) > 1 and all(w.startswith("layout ") for w in whats):
            out[message] = ["layouts " + ", ".join(w.split(" ", 1)[1] for w in whats)]
    return out


def _print_audit(rep) -> None:
    """One line per clause; under a failing one (a violation, a warning or a clause bnconf
    could not judge) the finding's details, worded as in the report (report/findings.py)."""
    sc = rep.scope
    within = f" within {', '.join(sc['layouts'])}; {', '.join(sc['dtypes'])}" if sc else ""
    print(f"{rep.target} under profile {rep.profile!r}: {rep.verdict.upper()}{within} "
          f"({rep.cases} cases, {rep.seconds:.1f} s)")
    if sc:
        print(f"  scope: layouts {', '.join(sc['layouts'])} ({'as declared' if sc['declared'] else 'every layout it did not refuse'}); "
              f"dtypes {', '.join(sc['dtypes'])}")
        for prefix, entries in (("not implemented", sc["out_of_scope"]), ("kept in scope", sc["notes"])):
            for message, whats in _grouped(entries).items():
                print(f"    {prefix}: {', '.join(whats)} ({message})")
                hint = next((o.get("hint") for o in entries if o["message"] == message and o.get("hint")), None)
                if hint:
                    print(f"      {hint}")
    for p in rep.passed:
        print(f"  pass  {p['clause']:24s} {p['cases']} cases")
    for tag, found in (("FAIL", rep.violations), ("WARN", rep.warnings), ("ERROR", rep.errors)):
        for v in found:
            print(f"  {tag:5s} {v['clause']:24s} {v['title']}" + (f"  [{v['level']}]" if tag == "WARN" else ""))
            for line in findings.plain_details(findings.from_audit(v), " " * 8):
                print(line)
    for b in rep.blocked:
        print(f"  blocked {b['clause']:22s} by {', '.join(b['blocked_by'])}")
    for n in rep.not_exercised:
        print(f"  n/a   {n['clause']:24s} {n['reason']}")
    if rep.fingerprint:
        print("  fingerprint: " + json.dumps(rep.fingerprint))


def cmd_fingerprint(args) -> int:
    if args.list:
        for i in all_implementations():
            print(f"{i.name:48s} profile={i.profile:8s} family={i.family}")
        return EXIT_OK
    if not args.target:
        return _err("fingerprint needs a TARGET (or --list)")
    if ":" in args.target:
        try:
            declared = layouts.parse(args.layouts) if args.layouts else None
            impl = make_implementation(args.target, args.profile or "torch", args.kind,
                                       **{k: getattr(args, k) for k in TEMPLATE_OPTIONS})
        except (TargetError, ValueError) as exc:
            return _err(str(exc))
        caps, scope = find_scope(impl, declared)   # probes stay inside what the code covers
        if caps is None:
            return _err(f"{args.target}: nothing in scope")
        impl.capabilities = caps
        fp = fingerprint(impl, default_momentum=False, default_eps=False)  # defaults: not probed, null
        fp["scope"] = scope.describe()
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
    recs = [stamp(r) for r in run_facts(args.framework or None)]
    for r in recs:
        print(f"{r['fact']:6s} {r['status']:8s} {r['claim'][:60]}\n       -> {r['observed'][:160]}")
    if args.out:
        Path(args.out).unlink(missing_ok=True)  # one run's facts, not an accumulation
        append_jsonl(args.out, recs)
    return EXIT_OK


def cmd_known(args) -> int:
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
    return bench_main(args)
