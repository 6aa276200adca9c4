"""Render spec/batchnorm.yaml as Markdown (spec/SPEC.md): one anchor per clause ID, so a
review comment can link `SPEC.md#bn-runvar-unbiased`. The committed file is checked to be
up to date by the tests."""
from __future__ import annotations

from bnconf.spec.loader import Spec
from bnconf.reference.error_model import VALID_U_KAPPA


def anchor(cid: str) -> str:
    return cid.lower()


def render(spec: Spec) -> str:
    L = ["# bnconf: the Batch Normalization conformance spec", "",
         "<!-- Generated from spec/batchnorm.yaml by `bnconf spec --render`. Do not edit by hand. -->", "",
         f"Spec version {spec.version}. Clause IDs are stable: cite them as `BN-...` and link to "
         "`spec/SPEC.md#<id in lower case>`. MUST clauses are conformance requirements; SHOULD "
         "clauses are recommendations that the report shows but the audit does not fail on alone.", "",
         "## Contents", ""]
    for c in spec.clauses.values():
        L.append(f"- [{c.id}](#{anchor(c.id)}): {c.title}" + (" *(planned)*" if c.planned else ""))
    L += ["", "## Profiles", "",
          "A profile is a convention family. A clause that pins a convention applies to exactly the "
          "profiles that state that value.", ""]
    fields = list(spec.conventions)
    L.append("| profile | " + " | ".join(fields + ["default momentum", "default eps", "initial mean/var"]) + " |")
    L.append("|" + "---|" * (len(fields) + 4))
    for p in spec.profiles.values():
        row = [p.name] + [str(p.conventions[f]) for f in fields] + [
            str(p.default_momentum), str(p.default_eps), f"{p.initial['running_mean']}/{p.initial['running_var']}"]
        L.append("| " + " | ".join(row) + " |")
    notes = [(p.name, h) for p in spec.profiles.values() for h in p.history]
    if notes:
        L += ["", "### Version history", ""]
        L += [f"- `{name}`: {h}" for name, h in notes]
    L += ["", "### Convention fields", ""]
    for f, d in spec.conventions.items():
        L.append(f"- `{f}` ({', '.join(map(str, d['values']))}): {d['meaning']}")
    L += ["", "### Which clauses apply to which profile", ""]
    L.append("| clause | " + " | ".join(spec.profiles) + " |")
    L.append("|" + "---|" * (len(spec.profiles) + 1))
    for c in spec.clauses.values():
        L.append(f"| [{c.id}](#{anchor(c.id)}) | " + " | ".join(
            "yes" if c.applies_to(p) else "" for p in spec.profiles.values()) + " |")
    L += ["", "## The tolerance model", "", TOLERANCE_TEXT.format(valid_u_kappa=VALID_U_KAPPA, **spec.tolerance), "", "## Clauses", ""]
    for c in spec.clauses.values():
        L.append(f'<a id="{anchor(c.id)}"></a>')
        L.append(f"### {c.id}: {c.title}")
        L.append("")
        status = f" · planned: {c.planned}" if c.planned else ""
        pins = ", ".join(f"`{k}: {v}`" for k, v in c.pins.items()) or "every profile"
        L.append(f"**{c.level}** · modes: {', '.join(c.modes)} · applies to: {pins} · check: `{c.check}`{status}")
        L.append("")
        L.append(c.text)
        L.append("")
        L.append(f"$$ {c.equation} $$")
        L.append("")
        L.append("Sources: " + "; ".join(c.sources))
        L.append("")
    return "\n".join(L).rstrip() + "\n"


TOLERANCE_TEXT = """No global rtol. Every compared output gets an elementwise bound from an error model
(conformance/reference/error_model.py), in the spirit of the WebGPU CTS acceptance intervals:

- `u_c`: the unit roundoff of the precision the spec requires for the computation: float32
  (2^-24) for float16, bfloat16 and float32 inputs (BN-DTYPE-ACCUM), float64 (2^-53) for
  float64 (BN-DTYPE-F64). `u_o`: the unit roundoff of the output's own dtype, plus half the
  subnormal spacing (fl(x) = x(1+d) + e).
- `g(n) = {summation_sqrt} sqrt(n) + {summation_log} log2(n) + 2`: error growth of a reduction of n terms (a
  random-walk bound for sequential sums plus the depth of a tree reduction).
- `kappa = |mean|/std` of each channel: the conditioning of the variance.
- `S = {safety}`: a safety factor for a slightly adversarial order of operations.

First-order bounds, per channel:

- batch mean: `e_mu = S g u_c (|mu| + sigma)`
- batch variance: `e_var = S (g+2) u_c (1 + kappa) sigma^2 + e_mu^2`
- normalized value: `e_xhat = (e_mu + S u_c (|x| + |mu|))/s + |x_hat| e_var/(2 s^2) + S u_c |x_hat|`, `s = sqrt(var + eps)`
- training output: `|gamma| e_xhat + S u_c (|y| + |beta|) + u_o |y|`
- running statistics: the oracle's own linear update applied to the bounds, plus one rounding per step
- gradients: the same terms propagated through `dx = gamma/s (dy - mean(dy) - x_hat mean(dy x_hat))`.

The variance bound is first order in kappa, which is what two-pass and Welford kernels
achieve. The one-pass `E[x^2] - E[x]^2` has error of about `(g+2) u_c kappa^2 sigma^2`, so in
float32 it leaves the model at |mean|/std of about 100 and above (BN-VAR-STABLE). Measured
on this model: float32 two-pass and Welford kernels stay at or below 0.2 of the bound for
kappa up to 1e4, and one-pass exceeds it 1.7 to 3.4 times at kappa = 100 (tests/test_tolerance.py).

Validity range: the bounds are first order, so they hold where `u_c kappa <= {valid_u_kappa}` (the
second-order terms are then below 1% of the first-order ones), with at least two values per
channel and magnitudes inside the dtype's range. In a channel of identical values (a constant
channel) rounding errors of a sum all have one sign, so there the mean's bound grows as `n + 2`,
the worst case of a sequential sum, instead of `g(n)`. Generated cases stay inside it (kappa <= 1e4,
`u_c kappa <= 6e-4` in float32), and the shifted input of BN-SHIFT-INVARIANCE is shifted per
channel by a multiple of that channel's own std, its |mean|/std capped at `{valid_u_kappa} / u` of
the input dtype. Outside this range a bound is no evidence either way, and no case is judged there.

A deviation is attributed, not widened away: if flipping one convention of the profile
makes the oracle match, the finding names that convention's clause; if only a lower
compute precision explains it, BN-DTYPE-ACCUM or BN-DTYPE-F64; if the case is
ill-conditioned (kappa >= {ill_conditioned_kappa}), BN-VAR-STABLE."""

