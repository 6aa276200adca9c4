"""The discrepancy report: reports/report.json (primary, schema in reports/schema.json),
report.md and a self-contained report.html (inline CSS and SVG; no network, no script).

"not run" and "unsupported" are never drawn like "fail" (the ONNX scoreboard complaint).
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import math
import platform
import subprocess
from pathlib import Path

from .records import atomic_write_text, read_jsonl
from .spec_loader import get_spec
from .spec_render import anchor

# Worst first: the cell of an implementation x clause shows its worst per-dtype status.
ORDER = ["fail", "error", "unexpected_pass", "known", "pass", "unsupported", "not_run"]
SYMBOL = {"pass": "pass", "fail": "FAIL", "known": "known", "unexpected_pass": "XPASS", "unsupported": "n/s",
          "error": "ERROR", "not_run": "not run"}
COLOR = {"pass": "#cfeccf", "fail": "#f4b6b6", "known": "#fde3a7", "unexpected_pass": "#f7c4f0",
         "unsupported": "#e6e6e6", "error": "#e0b0ff", "not_run": "#f5f5f5"}
SPEC_LINK = "../spec/SPEC.md#{}"
FP_KEYS = ("momentum_form", "default_momentum", "default_eps", "eps_placement", "normalize_variance",
           "running_variance", "reduction", "one_value_per_channel", "variance_algorithm")


def _worst(statuses):
    return min(statuses, key=lambda s: ORDER.index(s) if s in ORDER else 0)


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except Exception:
        return None


def _cpu_name():
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def declared_conventions(spec, profile_name):
    p = spec.profiles.get(profile_name)
    if p is None:
        return {}
    d = {k: p.conventions.get(k) for k in FP_KEYS if k in p.conventions}
    d["default_momentum"], d["default_eps"] = p.default_momentum, p.default_eps
    d["variance_algorithm"] = "stable"
    return d


def build(records: list[dict], spec, commit=None) -> dict:
    facts = [r for r in records if r.get("kind") == "fact"]
    results = [r for r in records if r.get("kind") not in ("fingerprint", "fact")]
    # A "gpu: not run here" placeholder from a CPU machine gives way to the GPU records
    # measured elsewhere (reports/gpu/) for the same implementation.
    on_gpu = {r["implementation"] for r in results if r.get("device") not in ("cpu", None)
              and not (r["clause"] == "*" and r["status"] == "not_run")}
    results = [r for r in results if not (r.get("device") == "gpu" and r["status"] == "not_run"
                                          and r["clause"] == "*" and r["implementation"] in on_gpu)]
    fps = {r["implementation"]: r for r in records if r.get("kind") == "fingerprint"}
    impls: dict = {}
    for r in results:
        i = impls.setdefault(r["implementation"], {"implementation": r["implementation"], "family": r.get("family"),
                                                   "profile": r.get("profile"), "versions": {}, "devices": set(),
                                                   "seconds": 0.0, "cases": 0, "notes": []})
        if r.get("versions"):
            i["versions"] = r["versions"]
        i["devices"].add(r.get("device"))
        i["seconds"] = max(i["seconds"], float(r.get("wall_s") or r.get("elapsed_s") or 0.0))
        i["cases"] = max(i["cases"], int(r.get("total_cases") or 0))
        if r.get("clause") == "*":
            i["notes"].append({"device": r.get("device"), "status": r["status"], "note": r.get("note", "")})
    matrix = []
    for name, i in impls.items():
        # a device with no result of its own (e.g. "gpu: not run, no GPU visible") is a note, not a row
        measured = {r.get("device") for r in results if r["implementation"] == name and r["clause"] != "*"}
        rows = sorted(d for d in i["devices"] if d and (d in measured or d == "cpu"))
        for device in rows:
            row = {"implementation": name, "device": device, "cells": {}}
            whole = [r for r in results if r["implementation"] == name and r.get("device") == device and r["clause"] == "*"]
            for c in spec.clauses:
                recs = [r for r in results if r["implementation"] == name and r.get("device") == device
                        and r["clause"] == c]
                if not recs and whole:
                    recs = whole
                if not recs:
                    continue
                row["cells"][c] = {"status": _worst([r["status"] for r in recs]),
                                   "cases": sum(int(r.get("cases") or 0) for r in recs),
                                   "dtypes": {r.get("dtype"): r["status"] for r in recs}}
            if row["cells"]:
                matrix.append(row)
    findings = []
    for r in results:
        if r["status"] not in ("fail", "known", "unexpected_pass", "error") or r["clause"] == "*" and r["status"] != "error":
            continue
        cmp = r.get("comparison") or {}
        f = {k: r.get(k) for k in ("implementation", "device", "dtype", "clause", "status", "note", "seed", "case",
                                   "reproducer", "measured", "allowed", "ratio", "cases", "failed")}
        f["title"] = spec.clauses[r["clause"]].title if r["clause"] in spec.clauses else ""
        f["link"] = SPEC_LINK.format(anchor(r["clause"])) if r["clause"] in spec.clauses else None
        f["expected"], f["actual"], f["index"], f["quantity"] = (cmp.get("expected"), cmp.get("actual"),
                                                                 cmp.get("index"), cmp.get("key"))
        f["known"] = r.get("known")
        if r.get("reproducer") and not str(r["reproducer"]).startswith("("):
            f["reproduce"] = f"python {r['reproducer']}/repro.py"
        findings.append(f)
    conventions = []
    data_parallel = {r["implementation"] for r in results if r.get("scope") == "data_parallel"}
    for name, i in impls.items():
        if name in data_parallel:
            continue   # a wrapper of a layer fingerprinted on its own; its conventions are the layer's
        fp = fps.get(name, {}).get("fingerprint")
        conventions.append({"implementation": name, "profile": i["profile"],
                            "declared": declared_conventions(spec, i["profile"]), "measured": fp})
    samples = {}
    for r in results:
        if r["clause"] in ("BN-NORMALIZE", "BN-VAR-STABLE") and r.get("samples"):
            samples.setdefault(r["implementation"], {}).setdefault(r.get("dtype"), []).extend(r["samples"])
    counts: dict = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {
        "schema": "bnconf-report/1",
        "spec_version": spec.version,
        "generated": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "suite": {"commit": commit or _git_commit(), "version": __import__("bnconf").__version__},
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "machine": platform.machine(), "cpu": _cpu_name(), "cpus": __import__("os").cpu_count(),
                        "gpu": sorted({n["note"] for i in impls.values() for n in i["notes"] if n["device"] != "cpu"})
                        or "GPU results present"},
        "summary": counts,
        "implementations": [dict(i, devices=sorted(d for d in i["devices"] if d)) for i in impls.values()],
        "clauses": [{"id": c.id, "title": c.title, "level": c.level, "link": SPEC_LINK.format(anchor(c.id)),
                     "planned": c.planned} for c in spec.clauses.values()],
        "matrix": matrix,
        "conventions": conventions,
        "findings": findings,
        "accuracy_samples": samples,
        "porting": porting_guide(spec),
        "documents": documents(results, facts, spec),
    }


def documents(results, facts, spec) -> list[dict]:
    """Per source document: what each of its specimens gets wrong and right, and its facts."""
    from .adapters.snippets.registry import DOCUMENTS
    out = []
    for doc, title in DOCUMENTS.items():
        specimens = {}
        for r in results:
            name = r["implementation"]
            if not name.startswith(f"snippet.{doc}.") or r.get("device") not in ("cpu", None):
                continue
            s = specimens.setdefault(name, {"implementation": name, "profile": r.get("profile"), "clauses": {}})
            if r["clause"] != "*":
                prev = s["clauses"].get(r["clause"])
                s["clauses"][r["clause"]] = r["status"] if prev is None else _worst([prev, r["status"]])
            if r["status"] in ("fail", "known", "error") and r["clause"] != "*":
                s.setdefault("findings", {}).setdefault(r["clause"], r.get("note") or "")
        for s in specimens.values():
            s["violates"] = sorted(c for c, st in s["clauses"].items() if st in ("fail", "known", "error"))
            s["conforms"] = sorted(c for c, st in s["clauses"].items() if st == "pass")
        out.append({"document": doc, "title": title, "specimens": list(specimens.values()),
                    "facts": [f for f in facts if f.get("document") == doc]})
    return out


def porting_guide(spec) -> list[dict]:
    """How to translate momentum, eps and running variance between each pair of profiles."""
    out = []
    names = [n for n, p in spec.profiles.items() if p.momentum_form != "none"]
    for a in names:
        for b in names:
            if a == b:
                continue
            pa, pb = spec.profiles[a], spec.profiles[b]
            ma, mb = pa.momentum_form, pb.momentum_form
            if ma == mb:
                mom = "same momentum value"
            elif {ma, mb} == {"batch_weight", "old_weight"}:
                mom = f"momentum_{b} = 1 - momentum_{a}"
            elif mb == "debiased_ema" or ma == "debiased_ema":
                mom = (f"decay = 1 - momentum ({'batch_weight' if 'batch_weight' in (ma, mb) else 'same value'}); "
                       "the debiased EMA has no exact equivalent in the other form early in training")
            else:
                mom = "no direct equivalent"
            ra, rb = pa.running_variance, pb.running_variance
            if ra == rb:
                var = "copy running variance as is"
            elif ra == "unbiased" and rb == "biased":
                var = "running_var_b = running_var_a * (n-1)/n (n: values per channel per batch; negligible for large n)"
            elif ra == "biased" and rb == "unbiased":
                var = "running_var_b = running_var_a * n/(n-1)"
            else:
                var = "n/a"
            eps = ("same default eps" if pa.default_eps == pb.default_eps else
                   f"set eps explicitly: {a} default {pa.default_eps}, {b} default {pb.default_eps}")
            default_m = (f"{a} default {pa.default_momentum} -> {b}: "
                         + (f"{1 - pa.default_momentum:g}" if {ma, mb} == {"batch_weight", "old_weight"}
                            and pa.default_momentum is not None else f"{pa.default_momentum}"))
            out.append({"from": a, "to": b, "momentum": mom, "default_momentum": default_m, "eps": eps,
                        "running_variance": var})
    return out


# ------------------------------------------------------------------------ rendering
def _svg_scatter(series: dict, title: str, xlabel: str, ylabel: str, w=640, h=300) -> str:
    """A log-log scatter, one colour per series; the y = 1 line is the tolerance bound."""
    pts = [(s, x, y) for s, xy in series.items() for x, y in xy if y is not None]
    if not pts:
        return ""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    ml, mr, mt, mb = 60, 180, 30, 40

    def lx(v):
        return math.log10(max(v, 0.1))

    def ly(v):
        return math.log10(min(max(v, 1e-4), 1e6))
    x0, x1 = -1.0, max(4.0, max(lx(x) for _, x, _ in pts))
    y0, y1 = -4.0, max(1.0, max(ly(y) for _, _, y in pts))

    def X(v):
        return ml + (lx(v) - x0) / (x1 - x0) * (w - ml - mr)

    def Y(v):
        return h - mb - (ly(v) - y0) / (y1 - y0) * (h - mt - mb)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2 - 60}" y="18" font-size="13">{html.escape(title)}</text>',
           f'<line x1="{ml}" y1="{Y(1)}" x2="{w - mr}" y2="{Y(1)}" stroke="#d62728" stroke-dasharray="4"/>',
           f'<text x="{w - mr - 70}" y="{Y(1) - 4}" font-size="10" fill="#d62728">bound (ratio 1)</text>',
           f'<line x1="{ml}" y1="{h - mb}" x2="{w - mr}" y2="{h - mb}" stroke="black"/>',
           f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{h - mb}" stroke="black"/>',
           f'<text x="{ml}" y="{h - 8}" font-size="11">{html.escape(xlabel)} (log10: {x0:g} .. {x1:g})</text>',
           f'<text x="4" y="{mt - 8}" font-size="11">{html.escape(ylabel)}</text>']
    for k in range(int(y0), int(y1) + 1):
        out.append(f'<text x="{ml - 40}" y="{Y(10 ** k) + 4}" font-size="10">1e{k}</text>')
    for i, s in enumerate(series):
        col = palette[i % len(palette)]
        for x, y in series[s]:
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="2.5" fill="{col}" fill-opacity="0.6"/>')
        out.append(f'<rect x="{w - mr + 10}" y="{mt + 14 * i}" width="9" height="9" fill="{col}"/>')
        out.append(f'<text x="{w - mr + 24}" y="{mt + 14 * i + 9}" font-size="10">{html.escape(s[:30])}</text>')
    out.append("</svg>")
    return "".join(out)


def plots(report: dict) -> list[str]:
    by_impl = {}
    by_dtype = {}
    for impl, per in report["accuracy_samples"].items():
        for dtype, pts in per.items():
            by_impl.setdefault(impl, []).extend((max(k, 0.1), r) for k, r in pts)
            by_dtype.setdefault(dtype, []).extend((max(k, 0.1), r) for k, r in pts)
    out = []
    if by_impl:
        out.append(_svg_scatter(by_impl, "Training-output error vs |mean|/std, per implementation",
                                "|mean|/std", "error / allowed"))
        out.append(_svg_scatter(by_dtype, "Training-output error vs |mean|/std, per dtype",
                                "|mean|/std", "error / allowed"))
    return [p for p in out if p]


def render_md(rep: dict) -> str:
    L = ["# bnconf discrepancy report", "",
         f"Generated {rep['generated']} · suite {rep['suite']['version']} (commit {rep['suite']['commit']}) · "
         f"spec version {rep['spec_version']} · Python {rep['environment']['python']} on {rep['environment']['platform']} · "
         f"CPU: {rep['environment'].get('cpu')} ({rep['environment'].get('cpus')} cores) · GPU: {rep['environment'].get('gpu')}",
         "", "Statuses: pass · FAIL (a finding) · known (a listed deviation, still measured) · XPASS (a listed "
         "deviation that passed) · n/s (unsupported by the implementation) · ERROR (no result) · not run.", "",
         "Summary: " + ", ".join(f"{k} {v}" for k, v in sorted(rep["summary"].items())), "",
         "## Implementations", "", "| implementation | profile | versions | devices | cases | seconds | notes |",
         "|---|---|---|---|---|---|---|"]
    for i in rep["implementations"]:
        notes = "; ".join(f"{n['device']}: {n['status']}: {n['note']}" for n in i["notes"])
        vers = ", ".join(f"{k} {v}" for k, v in i["versions"].items())
        L.append(f"| `{i['implementation']}` | {i['profile']} | {vers} | {', '.join(i['devices'])} | {i['cases']} | "
                 f"{i['seconds']:.1f} | {notes} |")
    clauses = [c["id"] for c in rep["clauses"]]
    L += ["", "## Matrix (implementation × clause)", ""]
    for row in rep["matrix"]:
        L.append(f"### `{row['implementation']}` on {row['device']}")
        L.append("")
        cells = [(c, row["cells"][c]) for c in clauses if c in row["cells"]]
        L.append("| " + " | ".join(f"[{c}]({SPEC_LINK.format(anchor(c))})" for c, _ in cells) + " |")
        L.append("|" + "---|" * len(cells))
        L.append("| " + " | ".join(f"{SYMBOL.get(v['status'], v['status'])} ({v['cases']})" for _, v in cells) + " |")
        L.append("")
    L += ["## Conventions: declared profile vs measured fingerprint", "",
          "| implementation | " + " | ".join(FP_KEYS) + " |", "|---|" + "---|" * len(FP_KEYS)]
    for c in rep["conventions"]:
        m = c["measured"] or {}
        cells = []
        for k in FP_KEYS:
            d, v = c["declared"].get(k), m.get(k)
            cells.append(f"{v}" if d == v or d is None else f"**{v}** (declared {d})")
        L.append(f"| `{c['implementation']}` ({c['profile']}) | " + " | ".join(cells) + " |")
    L += ["", "## Findings", ""]
    for f in sorted(rep["findings"], key=lambda f: (f["implementation"], f["clause"], str(f["dtype"]))):
        L.append(f"### {f['status'].upper()}: `{f['implementation']}` {f['device']} {f['dtype']}: "
                 f"[{f['clause']}]({f['link']}) {f['title']}")
        L.append("")
        L.append(f"- {f['note'] or ''}")
        if f.get("measured") is not None:
            L.append(f"- measured error {f['measured']} vs allowed {f['allowed']} (ratio {f['ratio']}); "
                     f"{f.get('quantity') or ''} at {f.get('index')}: actual {f.get('actual')}, expected {f.get('expected')}")
        L.append(f"- {f.get('failed')} of {f.get('cases')} cases failed; seed {f.get('seed')}; smallest case "
                 f"`{json.dumps(f.get('case'))}`")
        if f.get("known"):
            L.append(f"- known deviation: {f['known']['reason']} ({f['known']['link']})")
        if f.get("reproduce"):
            L.append(f"- reproduce: `{f['reproduce']}`")
        L.append("")
    L += ["## Source documents", "",
          "Each document's code, transcribed in adapters/snippets/, audited under the profile it claims; "
          "and each API fact it states, checked against the framework installed now.", ""]
    for d in rep.get("documents", []):
        L.append(f"### {d['document']}: {d['title']}")
        L.append("")
        for s in d["specimens"]:
            L.append(f"- `{s['implementation']}` (profile {s['profile']}): violates "
                     + (", ".join(f"[{c}]({SPEC_LINK.format(anchor(c))})" for c in s["violates"]) or "nothing")
                     + f"; conforms to {len(s['conforms'])} clauses")
            for c, note in sorted((s.get("findings") or {}).items()):
                if note:
                    L.append(f"  - {c}: {note[:200]}")
        for f in d["facts"]:
            L.append(f"- fact {f['fact']} **{f['status']}**: \u201c{f['claim']}\u201d \u2192 {f['observed']}")
        if not d["specimens"] and not d["facts"]:
            L.append("- (not run in these results)")
        L.append("")
    L += ["## Accuracy plots", ""]
    for i, svg in enumerate(plots(rep)):
        L.append(f"![plot {i + 1}](data:image/svg+xml;utf8,{_svg_data(svg)})")
        L.append("")
    L += ["## Porting guide", "", "| from | to | momentum | default momentum | eps | running variance |",
          "|---|---|---|---|---|---|"]
    for p in rep["porting"]:
        L.append(f"| {p['from']} | {p['to']} | {p['momentum']} | {p['default_momentum']} | {p['eps']} | "
                 f"{p['running_variance']} |")
    return "\n".join(L) + "\n"


def _svg_data(svg: str) -> str:
    from urllib.parse import quote
    return quote(svg, safe="")


def render_html(rep: dict) -> str:
    e = html.escape
    clauses = [c for c in rep["clauses"]]
    css = ("body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse;font-size:12px}"
           "td,th{border:1px solid #bbb;padding:3px 5px;text-align:center}th.v{writing-mode:vertical-rl;"
           "transform:rotate(180deg);white-space:nowrap}td.l{text-align:left;white-space:nowrap}"
           ".find{border-left:4px solid #d62728;padding:4px 10px;margin:8px 0;background:#fafafa}"
           ".known{border-left-color:#e0a000}code{background:#f1f1f1;padding:1px 3px}")
    H = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>bnconf report</title>"
         f"<style>{css}</style></head><body>", "<h1>bnconf discrepancy report</h1>",
         f"<p>Generated {e(rep['generated'])} · suite {e(str(rep['suite']['version']))} (commit "
         f"{e(str(rep['suite']['commit']))}) · spec version {rep['spec_version']} · Python "
         f"{e(rep['environment']['python'])} on {e(rep['environment']['platform'])}</p>",
         "<p>Legend: " + " ".join(f"<span style='background:{COLOR[s]};padding:2px 6px'>{SYMBOL[s]}</span>"
                                  for s in ORDER) + "</p>",
         "<p>Summary: " + ", ".join(f"{e(k)} {v}" for k, v in sorted(rep["summary"].items())) + "</p>",
         "<h2 id='matrix'>Matrix</h2><table><tr><th>implementation</th><th>device</th>"]
    H += [f"<th class='v'><a href='{e(c['link'])}'>{e(c['id'])}</a></th>" for c in clauses]
    H.append("</tr>")
    for row in rep["matrix"]:
        H.append(f"<tr><td class='l'>{e(row['implementation'])}</td><td>{e(row['device'])}</td>")
        for c in clauses:
            cell = row["cells"].get(c["id"])
            if cell is None:
                H.append("<td></td>")
                continue
            st = cell["status"]
            tip = "; ".join(f"{d}: {s}" for d, s in cell["dtypes"].items())
            H.append(f"<td style='background:{COLOR.get(st, '#fff')}' title='{e(tip)}'>{SYMBOL.get(st, st)}</td>")
        H.append("</tr>")
    H.append("</table>")
    H.append("<h2>Implementations</h2><table><tr><th>implementation</th><th>profile</th><th>versions</th>"
             "<th>cases</th><th>seconds</th><th>notes</th></tr>")
    for i in rep["implementations"]:
        notes = "; ".join(f"{n['device']}: {n['status']}: {n['note']}" for n in i["notes"])
        H.append(f"<tr><td class='l'>{e(i['implementation'])}</td><td>{e(str(i['profile']))}</td><td class='l'>"
                 f"{e(', '.join(f'{k} {v}' for k, v in i['versions'].items()))}</td><td>{i['cases']}</td>"
                 f"<td>{i['seconds']:.1f}</td><td class='l'>{e(notes)}</td></tr>")
    H.append("</table><h2>Conventions: declared vs measured</h2><table><tr><th>implementation</th>"
             + "".join(f"<th>{k}</th>" for k in FP_KEYS) + "</tr>")
    for c in rep["conventions"]:
        m = c["measured"] or {}
        H.append(f"<tr><td class='l'>{e(c['implementation'])} ({e(str(c['profile']))})</td>")
        for k in FP_KEYS:
            d, v = c["declared"].get(k), m.get(k)
            diff = d is not None and d != v
            H.append(f"<td style='{'background:#fde3a7' if diff else ''}' title='declared: {e(str(d))}'>"
                     f"{e(str(v))}</td>")
        H.append("</tr>")
    H.append("</table><h2>Findings</h2>")
    for f in sorted(rep["findings"], key=lambda f: (f["implementation"], f["clause"], str(f["dtype"]))):
        cls = "find known" if f["status"] == "known" else "find"
        H.append(f"<div class='{cls}'><b>{e(f['status'].upper())}</b> {e(f['implementation'])} · {e(str(f['device']))} · "
                 f"{e(str(f['dtype']))} · <a href='{e(str(f['link']))}'>{e(f['clause'])}</a> {e(f['title'])}<br>"
                 f"{e(f['note'] or '')}<br>")
        if f.get("measured") is not None:
            H.append(f"measured {e(str(f['measured']))} vs allowed {e(str(f['allowed']))} (ratio {e(str(f['ratio']))}); "
                     f"{e(str(f.get('quantity') or ''))} at {e(str(f.get('index')))}: actual {e(str(f.get('actual')))}, "
                     f"expected {e(str(f.get('expected')))}<br>")
        H.append(f"{f.get('failed')} of {f.get('cases')} cases failed · seed {e(str(f.get('seed')))} · case "
                 f"<code>{e(json.dumps(f.get('case')))}</code>")
        if f.get("known"):
            H.append(f"<br>known: {e(f['known']['reason'])} ({e(f['known']['link'])})")
        if f.get("reproduce"):
            H.append(f"<br>reproduce: <code>{e(f['reproduce'])}</code>")
        H.append("</div>")
    H.append("<h2>Source documents</h2>")
    for d in rep.get("documents", []):
        H.append(f"<h3>{e(d['document'])}: {e(d['title'])}</h3><ul>")
        for s_ in d["specimens"]:
            viol = ", ".join(f"<a href='{e(SPEC_LINK.format(anchor(c)))}'>{e(c)}</a>" for c in s_["violates"]) or "nothing"
            H.append(f"<li><code>{e(s_['implementation'])}</code> (profile {e(str(s_['profile']))}): violates {viol}; "
                     f"conforms to {len(s_['conforms'])} clauses</li>")
        for f in d["facts"]:
            H.append(f"<li>fact {e(f['fact'])} <b>{e(f['status'])}</b>: &ldquo;{e(f['claim'])}&rdquo; &rarr; "
                     f"{e(f['observed'])}</li>")
        H.append("</ul>")
    H.append("<h2>Accuracy</h2>")
    H += plots(rep)
    H.append("<h2>Porting guide</h2><table><tr><th>from</th><th>to</th><th>momentum</th><th>default momentum</th>"
             "<th>eps</th><th>running variance</th></tr>")
    for p in rep["porting"]:
        H.append("<tr>" + "".join(f"<td class='l'>{e(str(p[k]))}</td>" for k in
                                  ("from", "to", "momentum", "default_momentum", "eps", "running_variance")) + "</tr>")
    H.append("</table></body></html>")
    return "\n".join(H)


def build_report(raw_paths, out_dir: Path, commit=None) -> list[Path]:
    spec = get_spec()
    rep = build(read_jsonl(raw_paths), spec, commit)
    out_dir = Path(out_dir)
    paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "report.html"]
    atomic_write_text(paths[0], json.dumps(rep, indent=1, sort_keys=True, default=str) + "\n")
    atomic_write_text(paths[1], render_md(rep))
    atomic_write_text(paths[2], render_html(rep))
    return paths
