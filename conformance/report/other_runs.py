"""Which records are this run's: the report counts only records of one bnconf commit, and
shows every other record (another commit, or no stamp at all) in a section of its own.

A committed GPU half measured by older code, merged silently, once gave the summary ten
failures that today's code cannot produce; grouping by the stamp (provenance.stamp) keeps
such records visible but out of today's counts, matrix and findings.
"""
from __future__ import annotations

import subprocess

from bnconf.report.statuses import symbol
from bnconf.results.provenance import platform_label, project_root, provenance

BAD = ("fail", "unexpected_pass", "error")
TITLE = "Other runs (not counted in this report)"
INTRO = ("Records of other bnconf code, or without a stamp saying which code and machine measured "
         "them. They are kept apart from this run: not in its summary, matrix or findings. "
         "Their reproducers stayed on the machine that measured them.")


def commit_of(r: dict) -> str | None:
    return (r.get("bnconf") or {}).get("commit")


def _commit_time(commit: str) -> tuple | None:
    """(commit time, how many commits it descends from): two commits of the same second are
    ordered by ancestry, a child after its parent."""
    root = project_root()
    if root is None:
        return None
    try:
        out = subprocess.run(["git", "show", "-s", "--format=%ct", commit], cwd=root, capture_output=True,
                             text=True, timeout=10)
        depth = subprocess.run(["git", "rev-list", "--count", commit], cwd=root, capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        return None
    return int(out.stdout.strip()), int(depth.stdout.strip()) if depth.stdout.strip().isdigit() else 0


def _newest(commits: list[str], raw: list[dict]) -> tuple[str, str]:
    times = {c: _commit_time(c) for c in commits}
    dated = [c for c in commits if times[c] is not None]
    if dated:
        return max(dated, key=lambda c: (times[c], c)), f"the newest of {len(commits)} commits in the raw records"
    tree = provenance()["commit"]
    if tree in commits:
        return tree, f"the checked-out commit ({len(commits)} commits in the raw records, not in this clone's history)"
    count = {c: sum(1 for r in raw if commit_of(r) == c) for c in commits}
    return max(commits, key=lambda c: (count[c], c)), "the commit with the most raw records (no git history here)"


def choose_commit(raw: list[dict], archived: list[dict], wanted: str | None = None) -> tuple[str | None, str]:
    """(the commit whose records are this run, why that one). `wanted` may be a short hash."""
    if wanted:
        every = sorted({commit_of(r) for r in raw + archived} - {None})
        match = [c for c in every if c.startswith(wanted) or wanted.startswith(c)]
        return (match[0] if len(match) == 1 else wanted), "given with --commit"
    stamped = sorted({commit_of(r) for r in raw} - {None})
    if not stamped:
        return None, "no raw record carries a commit: the unstamped raw records"
    if len(stamped) == 1:
        return stamped[0], "the one commit in the raw records"
    return _newest(stamped, raw)


def split(raw: list[dict], archived: list[dict], wanted: str | None = None):
    """(this run's records, every other record, the suite stamp of this run). Records of the
    archived files (reports/gpu/) join this run only when they carry its commit."""
    commit, why = choose_commit(raw, archived, wanted)
    mine = [r for r in raw if commit_of(r) == commit]
    mine += [r for r in archived if commit is not None and commit_of(r) == commit]
    ids = {id(r) for r in mine}
    others = [r for r in raw + archived if id(r) not in ids]
    return mine, others, suite_stamp(mine, commit, why)


def suite_stamp(records: list[dict], commit: str | None, why: str) -> dict:
    stamps = [r.get("bnconf") or {} for r in records]
    dirty = {s.get("dirty") for s in stamps if s}
    versions = sorted({s["version"] for s in stamps if s.get("version")})
    return {"commit": commit, "selected": why, "version": ", ".join(versions) or None,
            "dirty": True if True in dirty else (False if dirty == {False} else None)}


def _platform_key(r: dict) -> str:
    return platform_label(r.get("platform"))


def platforms(records: list[dict]) -> list[dict]:
    """The machines this run's records were measured on, with the devices measured on each."""
    out: dict = {}
    for r in records:
        if r.get("kind") == "fact" or (r.get("clause") == "*" and r.get("status") == "not_run"):
            continue   # a fact names no device; "gpu: not run here" ran on none
        p = out.setdefault(_platform_key(r), {"label": _platform_key(r), "platform": r.get("platform"),
                                              "devices": set()})
        if r.get("device"):
            p["devices"].add(r["device"])
    return [dict(p, devices=sorted(p["devices"])) for _, p in sorted(out.items())]


def _counts(records: list[dict]) -> dict:
    out: dict = {}
    for r in records:
        out[r.get("status")] = out.get(r.get("status"), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: str(kv[0])))


def _versions(records: list[dict]) -> dict:
    seen: dict = {}
    for r in records:
        for k, v in (r.get("versions") or {}).items():
            seen.setdefault(k, set()).add(str(v))
    return {k: " | ".join(sorted(v)) for k, v in sorted(seen.items())}


def _group_key(r: dict) -> tuple:
    return (commit_of(r) or "", r.get("device") or "", _platform_key(r))


def other_runs(records: list[dict]) -> list[dict]:
    """One group per (commit, device, platform): each with its own versions and counts."""
    groups: dict = {}
    for r in records:
        if r.get("kind") in ("fact", "fingerprint"):
            continue
        groups.setdefault(_group_key(r), []).append(r)
    return [_group(recs) for _, recs in sorted(groups.items())]


def _group(recs: list[dict]) -> dict:
    first = recs[0]
    stamp = first.get("bnconf") or {}
    impls = sorted({r.get("implementation") for r in recs}, key=str)
    return {
        "label": (stamp.get("commit") or "unstamped")[:12], "commit": stamp.get("commit"),
        "dirty": stamp.get("dirty"), "version": stamp.get("version"), "device": first.get("device"),
        "platform": first.get("platform"), "platform_label": _platform_key(first),
        "sources": sorted({r["_source"] for r in recs if r.get("_source")}),
        "versions": _versions(recs), "summary": _counts(recs), "records": len(recs),
        "implementations": [{"implementation": i, "versions": _versions([r for r in recs if r.get("implementation") == i]),
                             "summary": _counts([r for r in recs if r.get("implementation") == i])} for i in impls],
        "findings": [{k: r.get(k) for k in ("implementation", "dtype", "clause", "status", "note", "ratio")}
                     for r in sorted(recs, key=lambda r: (str(r.get("implementation")), str(r.get("clause")),
                                                          str(r.get("dtype"))))
                     if r.get("status") in BAD],
    }


def heading(g: dict) -> str:
    who = "unstamped (no bnconf commit recorded)" if g["commit"] is None else \
        f"commit {g['label']}" + (" with uncommitted changes" if g.get("dirty") else "")
    return f"{who} · {g['device']} · {g['platform_label']}"


def _sources(g: dict) -> str:
    folders: dict = {}
    for s in g["sources"]:
        folder = s.rsplit("/", 1)[0] + "/" if "/" in s else "./"
        folders[folder] = folders.get(folder, 0) + 1
    return ", ".join(f"{f} ({n} file{'s' if n > 1 else ''})" for f, n in sorted(folders.items()))


def versions_text(versions: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items())


def count_text(counts: dict) -> str:
    return ", ".join(f"{symbol(k)} {v}" for k, v in counts.items())


def group_summary(g: dict) -> str:
    """How many records, from which files, their statuses and versions: a group's first line."""
    records = f"{g['records']} record{'' if g['records'] == 1 else 's'}"
    return (f"{records} from {_sources(g) or 'the given files'}: {count_text(g['summary'])}. "
            f"Versions: {versions_text(g['versions']) or 'not recorded'}.")
