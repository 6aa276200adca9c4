"""report.md and report.html from report.json's dict: the same content, the HTML
self-contained (inline CSS and SVG; no network, no script)."""
from __future__ import annotations

import html
import json
import math

from bnconf.report import other_runs as report_runs
from bnconf.report.assemble import COLOR, FP_KEYS, ORDER, REPRO_NOTE, SPEC_LINK, SYMBOL
from bnconf.spec.render import anchor

OTHER_LINK = "[Other runs](#other-runs-not-counted-in-this-report)"
LINK_HTML = "<a href='#other-runs'>Other runs</a>"


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


def _stamp_line(rep: dict) -> str:
    s = rep["suite"]
    if s.get("commit") is None:
        code = "bnconf commit not recorded (the raw records carry no stamp; these are all of them)"
    else:
        code = (f"bnconf {s.get('version') or '(version not recorded)'} at commit {s['commit'][:12]}"
                + (" with uncommitted changes" if s.get("dirty") else "") + f" ({s.get('selected')})")
    return f"Generated {rep['generated']} · {code} · spec version {rep['spec_version']}"


def _platform_lines(rep: dict) -> list[str]:
    return [f"{', '.join(p['devices'])}: {p['label']}" for p in rep["environment"]["platforms"]]


def _gpu(rep: dict) -> str:
    gpu = rep["environment"].get("gpu")
    return "; ".join(gpu) if isinstance(gpu, list) else str(gpu)


def _ambiguous(rep: dict) -> set:
    """(implementation, device) pairs measured on more than one platform: only these name it."""
    seen: dict = {}
    for row in rep["matrix"]:
        seen.setdefault((row["implementation"], row["device"]), set()).add(row.get("platform"))
    return {k for k, v in seen.items() if len(v) > 1}


def _device(impl: str, run: dict, ambiguous: set) -> str:
    return f"{run['device']} ({run['platform']})" if (impl, run["device"]) in ambiguous else str(run["device"])


def implementation_rows(rep: dict) -> list[tuple]:
    """(implementation, profile, device, versions, cases, seconds, notes): one per device run,
    each with the versions of its own records; the notes go on an implementation's first row."""
    amb, rows = _ambiguous(rep), []
    for i in rep["implementations"]:
        notes = "; ".join(f"{n['device']}: {n['status']}: {n['note']}" for n in i["notes"])
        runs = i["by_device"] or [{"device": "-", "platform": None, "versions": {}, "cases": i["cases"],
                                   "seconds": i["seconds"]}]
        for k, run in enumerate(runs):
            rows.append((i["implementation"], i["profile"], _device(i["implementation"], run, amb),
                         ", ".join(f"{a} {b}" for a, b in run["versions"].items()), run["cases"], run["seconds"],
                         notes if k == 0 else ""))
    return rows


def _other_runs_line(rep: dict) -> str:
    n = sum(g["records"] for g in rep.get("other_runs") or [])
    return (f"{n} record{'' if n == 1 else 's'} of other runs (another commit, or unstamped) "
            f"{'is' if n == 1 else 'are'} listed apart under {OTHER_LINK}, not counted here." if n else "")


def _absent(f: dict) -> str:
    return " (not in this checkout: the run writes it)" if f.get("reproducer_present") is False else ""


def _other_runs_html(rep: dict) -> str:
    line = html.escape(_other_runs_line(rep))
    return f"<p>{line.replace(OTHER_LINK, LINK_HTML)}</p>" if line else ""


def render_md(rep: dict) -> str:
    L = ["# bnconf discrepancy report", "", _stamp_line(rep), "", "Measured on:", ""]
    L += [f"- {p}" for p in _platform_lines(rep)] + [f"- GPU: {_gpu(rep)}", ""]
    L += ["Statuses: pass · FAIL (a finding) · known (a listed deviation, still measured) · XPASS (a listed "
          "deviation that passed) · n/s (unsupported by the implementation) · ERROR (no result) · not run.", "",
          "Summary: " + ", ".join(f"{k} {v}" for k, v in sorted(rep["summary"].items())), ""]
    L += [_other_runs_line(rep), ""] if _other_runs_line(rep) else []
    L += ["## Implementations", "", "| implementation | profile | device | versions | cases | seconds | notes |",
          "|---|---|---|---|---|---|---|"]
    for name, profile, device, vers, cases, secs, notes in implementation_rows(rep):
        L.append(f"| `{name}` | {profile} | {device} | {vers} | {cases} | {secs:.1f} | {notes} |")
    clauses = [c["id"] for c in rep["clauses"]]
    amb = _ambiguous(rep)
    L += ["", "## Matrix (implementation × clause)", ""]
    for row in rep["matrix"]:
        L.append(f"### `{row['implementation']}` on {_device(row['implementation'], row, amb)}")
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
    L += ["", "## Findings", "", REPRO_NOTE, ""]
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
        if f.get("blocks"):
            L.append(f"- blocks (fail only because of this): {', '.join(sorted(set(f['blocks'])))}")
        if f.get("traceback"):
            L.append("- bnconf could not judge this clause (an error of bnconf's, not the implementation's):")
            L.append("  ```\n  " + f["traceback"].strip().replace("\n", "\n  ") + "\n  ```")
        if f.get("known"):
            L.append(f"- known deviation: {f['known']['reason']} ({f['known']['link']})")
        if f.get("reproduce"):
            L.append(f"- reproduce: `{f['reproduce']}`" + _absent(f))
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
    L += report_runs.render_md(rep.get("other_runs") or [])
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
         f"<p>{e(_stamp_line(rep))}</p><p>Measured on:</p><ul>"
         + "".join(f"<li>{e(p)}</li>" for p in _platform_lines(rep)) + f"<li>GPU: {e(_gpu(rep))}</li></ul>",
         "<p>Legend: " + " ".join(f"<span style='background:{COLOR[s]};padding:2px 6px'>{SYMBOL[s]}</span>"
                                  for s in ORDER) + "</p>",
         "<p>Summary: " + ", ".join(f"{e(k)} {v}" for k, v in sorted(rep["summary"].items())) + "</p>",
         _other_runs_html(rep),
         "<h2 id='matrix'>Matrix</h2><table><tr><th>implementation</th><th>device</th>"]
    H += [f"<th class='v'><a href='{e(c['link'])}'>{e(c['id'])}</a></th>" for c in clauses]
    H.append("</tr>")
    amb = _ambiguous(rep)
    for row in rep["matrix"]:
        H.append(f"<tr><td class='l'>{e(row['implementation'])}</td>"
                 f"<td>{e(_device(row['implementation'], row, amb))}</td>")
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
    H.append("<h2>Implementations</h2><table><tr><th>implementation</th><th>profile</th><th>device</th>"
             "<th>versions</th><th>cases</th><th>seconds</th><th>notes</th></tr>")
    for name, profile, device, vers, cases, secs, notes in implementation_rows(rep):
        H.append(f"<tr><td class='l'>{e(name)}</td><td>{e(str(profile))}</td><td>{e(device)}</td><td class='l'>"
                 f"{e(vers)}</td><td>{cases}</td><td>{secs:.1f}</td><td class='l'>{e(notes)}</td></tr>")
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
    H.append(f"</table><h2>Findings</h2><p>{e(REPRO_NOTE)}</p>")
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
        if f.get("blocks"):
            H.append(f"<br>blocks: {e(', '.join(sorted(set(f['blocks']))))}")
        if f.get("traceback"):
            H.append(f"<br>bnconf could not judge this clause:<pre>{e(f['traceback'])}</pre>")
        if f.get("known"):
            H.append(f"<br>known: {e(f['known']['reason'])} ({e(f['known']['link'])})")
        if f.get("reproduce"):
            H.append(f"<br>reproduce: <code>{e(f['reproduce'])}</code>{e(_absent(f))}")
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
    H += report_runs.render_html(rep.get("other_runs") or [])
    H.append("<h2>Accuracy</h2>")
    H += plots(rep)
    H.append("<h2>Porting guide</h2><table><tr><th>from</th><th>to</th><th>momentum</th><th>default momentum</th>"
             "<th>eps</th><th>running variance</th></tr>")
    for p in rep["porting"]:
        H.append("<tr>" + "".join(f"<td class='l'>{e(str(p[k]))}</td>" for k in
                                  ("from", "to", "momentum", "default_momentum", "eps", "running_variance")) + "</tr>")
    H.append("</table></body></html>")
    return "\n".join(H)
