"""Load and validate the normative spec (spec/batchnorm.yaml).

YAML is only ever read with the safe loader. Every error names the file, the line and the
field, because the spec is edited by hand and a reviewer must be able to find the culprit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SPEC_FILE = "batchnorm.yaml"
SCHEMA_FILE = "schema.json"


class SpecError(ValueError):
    """A malformed spec or configuration file: says where (file:line) and what (field)."""

    def __init__(self, path: str | Path, line: int | None, fieldname: str, message: str):
        self.path, self.line, self.field, self.message = str(path), line, fieldname, message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {fieldname}: {message}")


@dataclass(frozen=True)
class Clause:
    id: str
    title: str
    level: str
    text: str
    equation: str
    modes: tuple[str, ...]
    check: str
    sources: tuple[str, ...]
    pins: dict[str, Any] = field(default_factory=dict)
    planned: str | None = None
    withdrawn: bool = False
    scope: str = "single"   # "data_parallel": the cross-replica clauses, audited by running/sync_audit.py
    needs: tuple[str, ...] = ()          # capabilities without which the clause is unsupported
    focus: dict[str, tuple] = field(default_factory=dict)   # case traits that exercise it
    depends_on: tuple[str, ...] = ()     # clauses whose deviation can make this one fail (blocked)


    def applies_to(self, profile: "Profile") -> bool:
        if self.withdrawn:
            return False
        return all(profile.conventions.get(k) == v for k, v in self.pins.items())


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    conventions: dict[str, Any]
    default_momentum: float | None
    default_eps: float | None
    initial: dict[str, float]
    sources: tuple[str, ...]
    eps_scale: float = 1.0   # attribution only: the eps an implementation uses, per eps it is given
    running_var_eps: float = 0.0   # attribution only: eps times this is added to what the running variance is fed
    history: tuple[str, ...] = ()  # how the convention family's behaviour changed across versions (rendered)

    def __getattr__(self, item: str) -> Any:  # profile.momentum_form etc.
        conv = self.__dict__.get("conventions", {})
        if item in conv:
            return conv[item]
        raise AttributeError(item)

    def with_convention(self, **changes: Any) -> "Profile":
        """A variant profile: used to attribute a deviation to the one convention that explains it."""
        conv = dict(self.conventions)
        conv.update(changes)
        return Profile(self.name, self.title, conv, self.default_momentum, self.default_eps,
                       self.initial, self.sources, self.eps_scale, self.running_var_eps, self.history)


@dataclass(frozen=True)
class Spec:
    path: str
    version: int
    conventions: dict[str, dict[str, Any]]
    profiles: dict[str, Profile]
    tolerance: dict[str, float]
    clauses: dict[str, Clause]
    lines: dict[str, int]  # clause id -> line in the YAML, for error messages and links

    def clause(self, cid: str) -> Clause:
        try:
            return self.clauses[cid]
        except KeyError:
            raise SpecError(self.path, None, "clause", f"unknown clause ID {cid!r}; known: "
                            + ", ".join(sorted(self.clauses))) from None

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise SpecError(self.path, None, "profile", f"unknown profile {name!r}; known: "
                            + ", ".join(sorted(self.profiles))) from None

    def clauses_for(self, profile: Profile, scope: str = "single") -> list[Clause]:
        """The clauses that apply to an implementation of `profile`; `scope` separates the
        single-device clauses from the cross-replica ones (a data-parallel wrapper)."""
        return [c for c in self.clauses.values() if c.applies_to(profile) and c.scope == scope]

    def clause_for_convention(self, profile: Profile, conv_field: str) -> Clause | None:
        """The applicable clause that pins `conv_field` for this profile (None if unpinned)."""
        for c in self.clauses.values():
            if conv_field in c.pins and c.applies_to(profile):
                return c
        return None


def _node_at(root: yaml.Node, path: list) -> yaml.Node:
    """Walk a composed YAML node tree along a JSON path; stop at the deepest existing node."""
    node = root
    for key in path:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
    return node


def _line(root: yaml.Node | None, path: list) -> int | None:
    if root is None:
        return None
    return _node_at(root, path).start_mark.line + 1


def _schema() -> dict:
    return json.loads(resources.files("bnconf.spec.normative").joinpath(SCHEMA_FILE).read_text())


def default_spec_path() -> Path:
    return Path(str(resources.files("bnconf.spec.normative").joinpath(SPEC_FILE)))


def load_spec(path: str | Path | None = None) -> Spec:
    path = Path(path) if path else default_spec_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(path, None, "file", f"cannot read spec: {exc.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SpecError(path, mark.line + 1 if mark else None, "yaml",
                        f"{exc.problem or exc.context}") from None
    if not isinstance(data, dict):
        raise SpecError(path, 1, "<root>", "the spec must be a mapping")

    import jsonschema  # deferred: only needed when a spec is loaded

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        p = list(err.absolute_path)
        fieldname = "/".join(str(x) for x in p) or "<root>"
        more = f" (and {len(errors) - 1} more schema errors)" if len(errors) > 1 else ""
        raise SpecError(path, _line(root, p), fieldname, err.message + more)

    conventions = data["conventions"]
    profiles: dict[str, Profile] = {}
    for name, p in data["profiles"].items():
        conv = {}
        for cname, cdef in conventions.items():
            if cname not in p:
                raise SpecError(path, _line(root, ["profiles", name]), f"profiles/{name}",
                                f"missing convention field {cname!r}")
            if p[cname] not in cdef["values"]:
                raise SpecError(path, _line(root, ["profiles", name, cname]), f"profiles/{name}/{cname}",
                                f"{p[cname]!r} is not one of {cdef['values']}")
            conv[cname] = p[cname]
        profiles[name] = Profile(name, p["title"], conv, p["default_momentum"], p["default_eps"],
                                 dict(p["initial"]), tuple(p["sources"]), history=tuple(p.get("history", ())))

    clauses: dict[str, Clause] = {}
    lines: dict[str, int] = {}
    for i, c in enumerate(data["clauses"]):
        where = _line(root, ["clauses", i, "id"])
        if c["id"] in clauses:
            raise SpecError(path, where, f"clauses/{i}/id", f"duplicate clause ID {c['id']!r}")
        for k, v in (c.get("pins") or {}).items():
            if k not in conventions:
                raise SpecError(path, _line(root, ["clauses", i, "pins", k]), f"clauses/{i}/pins/{k}",
                                f"unknown convention field {k!r}; known: {sorted(conventions)}")
            if v not in conventions[k]["values"]:
                raise SpecError(path, _line(root, ["clauses", i, "pins", k]), f"clauses/{i}/pins/{k}",
                                f"{v!r} is not one of {conventions[k]['values']}")
        clauses[c["id"]] = Clause(
            id=c["id"], title=c["title"], level=c["level"], text=c["text"].strip(),
            equation=c["equation"], modes=tuple(c["modes"]), check=c["check"],
            sources=tuple(c["sources"]), pins=dict(c.get("pins") or {}),
            planned=c.get("planned"), withdrawn=bool(c.get("withdrawn", False)),
            scope=c.get("scope", "single"), needs=tuple(c.get("needs") or ()),
            focus={k: tuple(v) for k, v in (c.get("focus") or {}).items()},
            depends_on=tuple(c.get("depends_on") or ()))
        for k in clauses[c["id"]].focus:
            if k not in FOCUS_TRAITS:
                raise SpecError(path, _line(root, ["clauses", i, "focus", k]), f"clauses/{i}/focus/{k}",
                                f"unknown case trait {k!r}; known: {sorted(FOCUS_TRAITS)}")
        lines[c["id"]] = where or 0
    _check_dependencies(path, root, data, clauses)
    return Spec(str(path), data["spec_version"], conventions, profiles, dict(data["tolerance"]),
                clauses, lines)


# the traits a focus can name (strategies.case_traits, strategies.sync_case_traits)
FOCUS_TRAITS = {"shape", "special", "affine", "eps", "momentum", "track", "dtype", "kappa", "split"}


def _check_dependencies(path, root, data, clauses) -> None:
    """Every depends_on names another clause. Cycles are allowed: a precision clause and the
    clauses whose failures it can explain depend on each other, and blocking.py never lets two
    clauses excuse each other (a clause blocked only through itself stays a finding)."""
    for i, c in enumerate(data["clauses"]):
        for j, dep in enumerate(c.get("depends_on") or ()):
            if dep not in clauses or dep == c["id"]:
                raise SpecError(path, _line(root, ["clauses", i, "depends_on", j]), f"clauses/{i}/depends_on/{j}",
                                f"unknown clause ID {dep!r}" if dep not in clauses else f"{dep} depends on itself")


_CACHE: dict[str, Spec] = {}


def get_spec(path: str | Path | None = None) -> Spec:
    key = str(path or "")
    if key not in _CACHE:
        _CACHE[key] = load_spec(path)
    return _CACHE[key]
