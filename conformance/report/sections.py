"""What report.md and report.html both say outside the findings: the stamp, the machines,
the implementation rows, the pointer to other runs. Each renderer marks these up its own way."""
from __future__ import annotations

OTHER_LINK = "[Other runs](#other-runs-not-counted-in-this-report)"


def stamp_line(rep: dict) -> str:
    s = rep["suite"]
    if s.get("commit") is None:
        code = "bnconf commit not recorded (the raw records carry no stamp; these are all of them)"
    else:
        code = (f"bnconf {s.get('version') or '(version not recorded)'} at commit {s['commit'][:12]}"
                + (" with uncommitted changes" if s.get("dirty") else "") + f" ({s.get('selected')})")
    return f"Generated {rep['generated']} · {code} · spec version {rep['spec_version']}"


def platform_lines(rep: dict) -> list[str]:
    return [f"{', '.join(p['devices'])}: {p['label']}" for p in rep["environment"]["platforms"]]


def gpu(rep: dict) -> str:
    g = rep["environment"].get("gpu")
    return "; ".join(g) if isinstance(g, list) else str(g)


def ambiguous(rep: dict) -> set:
    """(implementation, device) pairs measured on more than one platform: only these name it."""
    seen: dict = {}
    for row in rep["matrix"]:
        seen.setdefault((row["implementation"], row["device"]), set()).add(row.get("platform"))
    return {k for k, v in seen.items() if len(v) > 1}


def device(impl: str, run: dict, amb: set) -> str:
    return f"{run['device']} ({run['platform']})" if (impl, run["device"]) in amb else str(run["device"])


def implementation_rows(rep: dict) -> list[tuple]:
    """(implementation, profile, device, versions, cases, seconds, notes): one per device run,
    each with the versions of its own records; the notes go on an implementation's first row."""
    amb, rows = ambiguous(rep), []
    for i in rep["implementations"]:
        notes = "; ".join(f"{n['device']}: {n['status']}: {n['note']}" for n in i["notes"])
        runs = i["by_device"] or [{"device": "-", "platform": None, "versions": {}, "cases": i["cases"],
                                   "seconds": i["seconds"]}]
        for k, run in enumerate(runs):
            rows.append((i["implementation"], i["profile"], device(i["implementation"], run, amb),
                         ", ".join(f"{a} {b}" for a, b in run["versions"].items()), run["cases"], run["seconds"],
                         notes if k == 0 else ""))
    return rows


def other_runs_line(rep: dict) -> str:
    n = sum(g["records"] for g in rep.get("other_runs") or [])
    return (f"{n} record{'' if n == 1 else 's'} of other runs (another commit, or unstamped) "
            f"{'is' if n == 1 else 'are'} listed apart under {OTHER_LINK}, not counted here." if n else "")


def finding_order(rep: dict) -> list[dict]:
    return sorted(rep["findings"], key=lambda f: (f["implementation"], f["clause"], str(f["dtype"])))
