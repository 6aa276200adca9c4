"""Array layouts by name (`--layouts NC,NCHW`): N the batch, C the features, L/D/H/W spatial,
in the array's axis order. A declared scope is a set of these names; without one an
implementation's layouts are every rank it declares crossed with every feature axis."""
from __future__ import annotations

# name -> (rank, where the feature axis is); NC's one axis is both first and last
LAYOUTS = {
    "NC": (2, "first"), "NCL": (3, "first"), "NCHW": (4, "first"), "NCDHW": (5, "first"),
    "NLC": (3, "last"), "NHWC": (4, "last"), "NDHWC": (5, "last"),
}


def parse(text: str) -> tuple[str, ...]:
    """'NC,nchw' -> ('NC', 'NCHW'); a name that is not a layout is a ValueError naming it."""
    names = [t.strip().upper() for t in str(text).split(",") if t.strip()]
    bad = [n for n in names if n not in LAYOUTS]
    if bad or not names:
        raise ValueError(f"--layouts: {', '.join(map(repr, bad)) or 'nothing given'} is not a layout; "
                         f"choose from {', '.join(LAYOUTS)}")
    return tuple(dict.fromkeys(names))


def name_of(rank: int, feature_axis: int) -> str | None:
    """The layout of an array of this rank with its features on this axis (None: neither first
    nor last, a layout no candidate names)."""
    for name, (r, where) in LAYOUTS.items():
        if r == rank and feature_axis == (1 if where == "first" else rank - 1):
            return name
    return None


def allowed(caps) -> tuple[str, ...]:
    """The layouts a capabilities object admits, in LAYOUTS order."""
    if caps.layouts:
        return tuple(n for n in LAYOUTS if n in caps.layouts)
    return tuple(n for n, (r, where) in LAYOUTS.items()
                 if r in caps.ranks and (where in caps.feature_axes or r == 2))


def admits(caps, rank: int, feature_axis: int) -> bool:
    return name_of(rank, feature_axis) in allowed(caps)


def preferred(caps, ranks=(4, 2, 3, 5)) -> tuple[int, int]:
    """(rank, feature axis) of the admitted layout with the first preferred rank, channels
    first where both are admitted: where a fingerprint probe or a benchmark call runs."""
    names = allowed(caps)
    for rank in ranks:
        for name in names:
            r, where = LAYOUTS[name]
            if r == rank:
                return r, 1 if where == "first" else r - 1
    raise ValueError("no layout is admitted")


def narrowed(caps, names) -> dict:
    """The Capabilities fields (for dataclasses.replace) that admit exactly these layouts."""
    names = tuple(n for n in LAYOUTS if n in names)
    return {"layouts": names, "ranks": tuple(sorted({LAYOUTS[n][0] for n in names})),
            "feature_axes": tuple(sorted({LAYOUTS[n][1] for n in names}))}
