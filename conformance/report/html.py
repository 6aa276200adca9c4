"""report.html from report.json's dict: the content of report.md, self-contained (inline CSS
and SVG; no network, no script)."""
from __future__ import annotations

from html import escape as e

from bnconf.report import findings, other_runs, sections
from bnconf.report.findings import Block, Code, Link
from bnconf.report.plots import plots
from bnconf.report.statuses import COLOR, FP_KEYS, ORDER, REPRO_NOTE, SPEC_LINK, SYMBOL, symbol
from bnconf.spec.render import anchor

LINK_HTML = "<a href='#other-runs'>Other runs</a>"
CSS = ("body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse;font-size:12px}"
       "td,th{border:1px solid #bbb;padding:3px 5px;text-align:center}th.v{writing-mode:vertical-rl;"
       "transform:rotate(180deg);white-space:nowrap}td.l{text-align:left;white-space:nowrap}"
       ".find{border-left:4px solid #d62728;padding:4px 10px;margin:8px 0;background:#fafafa}"
       ".known{border-left-color:#e0a000}code{background:#f1f1f1;padding:1px 3px}")


def segment(s) -> str:
    if isinstance(s, Code):
        return f"<code>{e(s.text)}</code>"
    if isinstance(s, Link):
        return f"<a href='{e(str(s.href))}'>{e(s.text)}</a>"
    if isinstance(s, Block):
        return f"<pre>{e(s.text)}</pre>"
    return e(s)


def line(pieces: tuple) -> str:
    return "".join(segment(s) for s in pieces)


def finding(f: dict) -> str:
    cls = "find known" if f["status"] == "known" else "find"
    return (f"<div class='{cls}'><b>{line(findings.heading(f))}</b><br>"
            + "<br>".join(line(d) for d in findings.details(f)) + "</div>")


def _other_runs(groups: list[dict]) -> list[str]:
    if not groups:
        return []
    H = [f"<h2 id='other-runs'>{e(other_runs.TITLE)}</h2>", f"<p>{e(other_runs.INTRO)}</p>"]
    for g in groups:
        H.append(f"<h3>{e(other_runs.heading(g))}</h3><p>{e(other_runs.group_summary(g))}</p>")
        H.append("<table><tr><th>implementation</th><th>versions</th><th>statuses</th></tr>")
        for i in g["implementations"]:
            H.append(f"<tr><td class='l'>{e(str(i['implementation']))}</td><td class='l'>"
                     f"{e(other_runs.versions_text(i['versions']))}</td>"
                     f"<td class='l'>{e(other_runs.count_text(i['summary']))}</td></tr>")
        H.append("</table>")
        if g["findings"]:
            H.append("<ul>" + "".join(f"<li>{e(findings.summary(f))}</li>" for f in g["findings"]) + "</ul>")
    return H


def _matrix(rep: dict) -> list[str]:
    clauses = rep["clauses"]
    H = ["<h2 id='matrix'>Matrix</h2><table><tr><th>implementation</th><th>device</th>"]
    H += [f"<th class='v'><a href='{e(c['link'])}'>{e(c['id'])}</a></th>" for c in clauses]
    H.append("</tr>")
    amb = sections.ambiguous(rep)
    for row in rep["matrix"]:
        H.append(f"<tr><td class='l'>{e(row['implementation'])}</td>"
                 f"<td>{e(sections.device(row['implementation'], row, amb))}</td>")
        for c in clauses:
            cell = row["cells"].get(c["id"])
            if cell is None:
                H.append("<td></td>")
                continue
            st = cell["status"]
            tip = "; ".join(f"{d}: {s}" for d, s in cell["dtypes"].items())
            H.append(f"<td style='background:{COLOR.get(st, '#fff')}' title='{e(tip)}'>{symbol(st)}</td>")
        H.append("</tr>")
    H.append("</table>")
    return H


def _documents(rep: dict) -> list[str]:
    H = ["<h2>Source documents</h2>"]
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
    return H


def render_html(rep: dict) -> str:
    apart = e(sections.other_runs_line(rep))
    H = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>bnconf report</title>"
         f"<style>{CSS}</style></head><body>", "<h1>bnconf discrepancy report</h1>",
         f"<p>{e(sections.stamp_line(rep))}</p><p>Measured on:</p><ul>"
         + "".join(f"<li>{e(p)}</li>" for p in sections.platform_lines(rep))
         + f"<li>GPU: {e(sections.gpu(rep))}</li></ul>",
         "<p>Legend: " + " ".join(f"<span style='background:{COLOR[s]};padding:2px 6px'>{SYMBOL[s]}</span>"
                                  for s in ORDER) + "</p>",
         "<p>Summary: " + ", ".join(f"{e(k)} {v}" for k, v in sorted(rep["summary"].items())) + "</p>",
         f"<p>{apart.replace(sections.OTHER_LINK, LINK_HTML)}</p>" if apart else ""]
    H += _matrix(rep)
    H.append("<h2>Implementations</h2><table><tr><th>implementation</th><th>profile</th><th>device</th>"
             "<th>versions</th><th>cases</th><th>seconds</th><th>notes</th></tr>")
    for name, profile, device, vers, cases, secs, notes in sections.implementation_rows(rep):
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
    H += [finding(f) for f in sections.finding_order(rep)]
    H += _documents(rep)
    H += _other_runs(rep.get("other_runs") or [])
    H.append("<h2>Accuracy</h2>")
    H += plots(rep)
    H.append("<h2>Porting guide</h2><p>Copying a trained layer's weights: every profile normalizes eval with "
             "the stored running variance as it is, so the statistics are copied unchanged and eps is carried "
             "over by value. The other columns are for training that continues in the target.</p>"
             "<table><tr><th>from</th><th>to</th><th>weights</th><th>momentum</th><th>default momentum</th>"
             "<th>eps</th><th>running variance (training on)</th></tr>")
    for p in rep["porting"]:
        H.append("<tr>" + "".join(f"<td class='l'>{e(str(p.get(k, '')))}</td>" for k in
                                  ("from", "to", "weights_text", "momentum", "default_momentum", "eps",
                                   "running_variance")) + "</tr>")
    H.append("</table></body></html>")
    return "\n".join(H)
