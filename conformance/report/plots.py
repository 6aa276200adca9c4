"""The accuracy plots of the report: inline SVG (no network, no script), embedded as they are
in report.html and as data URLs in report.md."""
from __future__ import annotations

import math
from html import escape

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def _svg_scatter(series: dict, title: str, xlabel: str, ylabel: str, w=640, h=300) -> str:
    """A log-log scatter, one colour per series; the y = 1 line is the tolerance bound."""
    pts = [(s, x, y) for s, xy in series.items() for x, y in xy if y is not None]
    if not pts:
        return ""
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
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{escape(title)}">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2 - 60}" y="18" font-size="13">{escape(title)}</text>',
           f'<line x1="{ml}" y1="{Y(1)}" x2="{w - mr}" y2="{Y(1)}" stroke="#d62728" stroke-dasharray="4"/>',
           f'<text x="{w - mr - 70}" y="{Y(1) - 4}" font-size="10" fill="#d62728">bound (ratio 1)</text>',
           f'<line x1="{ml}" y1="{h - mb}" x2="{w - mr}" y2="{h - mb}" stroke="black"/>',
           f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{h - mb}" stroke="black"/>',
           f'<text x="{ml}" y="{h - 8}" font-size="11">{escape(xlabel)} (log10: {x0:g} .. {x1:g})</text>',
           f'<text x="4" y="{mt - 8}" font-size="11">{escape(ylabel)}</text>']
    for k in range(int(y0), int(y1) + 1):
        out.append(f'<text x="{ml - 40}" y="{Y(10 ** k) + 4}" font-size="10">1e{k}</text>')
    for i, s in enumerate(series):
        col = PALETTE[i % len(PALETTE)]
        for x, y in series[s]:
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="2.5" fill="{col}" fill-opacity="0.6"/>')
        out.append(f'<rect x="{w - mr + 10}" y="{mt + 14 * i}" width="9" height="9" fill="{col}"/>')
        out.append(f'<text x="{w - mr + 24}" y="{mt + 14 * i + 9}" font-size="10">{escape(s[:30])}</text>')
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
