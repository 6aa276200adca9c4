"""The conventions an implementation might follow instead of its profile's: what attribution
tries when a quantity deviates, so that a deviation a known alternative explains is reported
under the clause that pins it, with the value measured (also how fingerprints are measured)."""
from __future__ import annotations

# Alternatives tried when a quantity deviates (attribution), per convention field.
FLIPS = {
    "eps_placement": ["outside_sqrt", "minus_inside_sqrt", "absent", "inside_sqrt"],
    "normalize_variance": ["unbiased", "biased"],
    "reduction": ["batch_axis_only", "all_but_feature_axis"],
    "running_variance": ["biased", "unbiased", "std"],
    "momentum_form": ["batch_weight", "old_weight"],
}

EPS_CANDIDATES = (1e-5, 1e-3, 2e-5, 1e-6, 1e-4, 1e-12, 0.0)
EPS_FACTORS = (2.0, 0.5, 10.0, 0.1)   # eps added twice, halved, or off by a power of ten
MOMENTUM_CANDIDATES = (0.1, 0.9, 0.99, 0.01, 0.999, 0.001, 1.0, 0.0)

# Conventions no profile follows, tried only where rounding cannot mimic them (a float16 one-pass
# variance "matches" eps absent or a running std by chance).
ATTRIBUTION_ONLY = {"absent", "std"}
