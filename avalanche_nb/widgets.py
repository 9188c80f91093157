"""Interactive exploration in JupyterLab: a gain scrubber and an avalanche inspector.

    from avalanche_nb.widgets import explore
    explore(run_id="default-1")                  # a run's phase-03 lattices
    explore(model="smollm2-135m-instruct")       # computed live on a few Dataset A windows (cached)

:class:`GainScrubber` shows one sequence's token × layer lattice (events coloured by avalanche id),
the per-layer rates and the b / delta-b / chi curves vs g with a marker at the current g; moving the
slider or a control updates the figures in place (plotly ``FigureWidget``, one batched message per
figure). :class:`AvalancheInspector` shows the avalanche clicked in the heatmap or picked from a
size-sorted list (tokens highlighted, layers, size, sites with their spikes under both spike
definitions) and exports it next to the run's artifacts. Python callbacks need a live kernel; an
archived notebook keeps the last state only.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable

import ipywidgets as W
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import avalanche_detail, live_stack, plots
from . import gain_stack as gs
from .options import ADJACENCIES, SPIKE_DEFS, THRESHOLD_MODES

#: (column of gain_stack.curves, panel title) of the curves figure
CURVES = (("b_tot", "b_tot"), ("delta_b_tot_n1", "Δb_tot vs N1"), ("chi_perc", "χ_perc"))
_SELECTION = "selected avalanche"


def _json_safe(values) -> list:
    """Values as (nested) lists with None for NaN: widget messages are strict JSON (NaN is refused)."""
    a = np.asarray(values, dtype=float)
    return np.where(np.isnan(a), None, a).tolist()


class GainScrubber:
    """A slider over the stack's gain grid plus spike definition, threshold mode, adjacency and
    sequence controls, and three figures updated in place: ``heatmap`` (the lattice), ``rates`` (per
    layer) and ``curves`` (signatures of the whole stack vs g, marker at the current g).

    The view starts at gain ``g``, ``spike_def``, threshold ``mode``, ``adjacency`` (``None``: the stack's)
    and sequence ``seq``. ``labels`` int [T, L] and ``table`` (one row per avalanche,
    ``avalanche_detail.sequence_avalanches``) describe the lattice on show; functions passed to
    :meth:`on_lattice` run after it changes.
    """

    def __init__(self, stack: gs.GainStack, *, g: float = 1.0, spike_def: str = "pos", mode: str = "rate_matched",
                 adjacency: str | None = None, seq: int = 0):
        gs.check_key(spike_def, mode)
        adjacency = adjacency or stack.adjacency
        if adjacency not in ADJACENCIES:
            raise ValueError(f"unknown adjacency {adjacency!r}; use one of {ADJACENCIES}")
        G, N, T, L = stack.shape
        if not 0 <= seq < N:
            raise ValueError(f"sequence {seq} is out of range: the stack has {N} sequences")
        self.stack = stack
        self._listeners: list[Callable[[], None]] = []
        self.gain = W.SelectionSlider(options=[(f"{x:g}", i) for i, x in enumerate(stack.g)],
                                      value=stack.gain_index(g), description="gain g", continuous_update=True,
                                      layout=W.Layout(width="420px"))
        self.spike_def = W.ToggleButtons(options=list(SPIKE_DEFS), value=spike_def, description="spikes",
                                         style={"button_width": "60px"})
        self.mode = W.ToggleButtons(options=list(THRESHOLD_MODES), value=mode, description="thresholds",
                                    style={"button_width": "130px"})
        self.adjacency = W.Dropdown(options=list(ADJACENCIES), value=adjacency, description="adjacency")
        previews = ["".join(stack.token_text[n][stack.valid[n]][:12]).replace("·", " ").strip() for n in range(N)]
        self.sequence = W.Dropdown(options=[(f"{n}: {p[:48]}", n) for n, p in enumerate(previews)], value=seq,
                                   description="sequence", layout=W.Layout(width="420px"))
        self.info = W.HTML()
        self.labels, self.table = self._avalanches()
        self.heatmap = self._heatmap_figure()
        self.rates = self._rates_figure()
        self.curves = self._curves_figure()
        self.gain.observe(lambda _: self.update_lattice(), "value")
        self.sequence.observe(lambda _: self.update_lattice(), "value")
        for control in (self.spike_def, self.mode, self.adjacency):
            control.observe(lambda _: self.update_all(), "value")
        self.widget = W.VBox([
            W.HBox([self.gain, self.sequence]), W.HBox([self.spike_def, self.mode, self.adjacency]), self.info,
            self.heatmap, W.HBox([self.rates, self.curves])])

    # ------------------------------------------------------------------ state
    @property
    def gi(self) -> int:
        return int(self.gain.value)

    @property
    def g(self) -> float:
        return float(self.stack.g[self.gi])

    @property
    def seq(self) -> int:
        return int(self.sequence.value)

    def counts(self) -> np.ndarray:
        """int [T, L]: the lattice on show."""
        return self.stack.lattice(self.spike_def.value, self.mode.value, self.gi)[self.seq]

    def signatures(self) -> pd.DataFrame:
        """The curves' numbers: ``gain_stack.curves`` of the whole stack for the current controls."""
        return gs.curves(self.stack, self.spike_def.value, self.mode.value, self.adjacency.value)

    def on_lattice(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def _avalanches(self):
        return avalanche_detail.sequence_avalanches(self.counts(), self.stack.valid[self.seq], self.adjacency.value)

    def _title(self) -> str:
        return (f"sequence {self.seq} · g = {self.g:g} · {self.spike_def.value}, {self.mode.value}, "
                f"{self.adjacency.value} · {len(self.table)} avalanches")

    # ------------------------------------------------------------------ figures
    def _heatmap_figure(self) -> go.FigureWidget:
        text = list(self.stack.token_text[self.seq])
        fig = plots.lattice_heatmap(self.counts(), text, self.stack.valid[self.seq], self._title(), self.labels)
        fig.data[0].z = _json_safe(fig.data[0].z)
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name=_SELECTION, hoverinfo="skip", showlegend=False,
                                 marker=dict(symbol="square-open", size=9, color="black", line=dict(width=2))))
        fig.update_layout(height=300 + 8 * self.stack.shape[3], width=1100)
        return go.FigureWidget(fig)

    def _rates_figure(self) -> go.FigureWidget:
        L = self.stack.shape[3]
        fig = go.Figure([go.Bar(x=np.arange(L), y=self._layer_rates(), name="rate at g"),
                         go.Scatter(x=np.arange(L), y=self.stack.target_rate, mode="lines", name="g = 1 target",
                                    line=dict(color="black", dash="dot"))])
        fig.update_layout(title=self._rates_title(), xaxis_title="layer", yaxis_title="neuron rate", height=330,
                          width=440, margin=dict(l=60, r=10, t=50, b=40), legend=dict(orientation="h", y=-0.25))
        return go.FigureWidget(fig)

    def _curves_figure(self) -> go.FigureWidget:
        sig = self.signatures()
        fig = make_subplots(rows=1, cols=len(CURVES), subplot_titles=[t for _, t in CURVES])
        for i, (col, _) in enumerate(CURVES, 1):
            fig.add_trace(go.Scatter(x=sig.g, y=_json_safe(sig[col]), mode="lines+markers", showlegend=False,
                                     name=col, line=dict(color="#1f77b4")), row=1, col=i)
        marker = dict(color="crimson", size=13, symbol="diamond")
        for i, (col, _) in enumerate(CURVES, 1):  # markers after the curves: traces 3..5
            fig.add_trace(go.Scatter(x=[self.g], y=_json_safe([sig[col].iloc[self.gi]]), mode="markers",
                                     showlegend=False, name=f"current g ({col})", marker=marker), row=1, col=i)
        fig.update_layout(title=self._curves_title(), height=330, width=660, margin=dict(l=40, r=10, t=70, b=40))
        fig.update_xaxes(title_text="g")
        return go.FigureWidget(fig)

    def _layer_rates(self) -> np.ndarray:
        counts = self.stack.lattice(self.spike_def.value, self.mode.value, self.gi)
        return gs.layer_rates(counts, self.stack.valid, self.stack.d_ff)

    def _rates_title(self) -> str:
        return f"neuron rate per layer (all sequences), g = {self.g:g}"

    def _curves_title(self) -> str:
        return (f"whole stack vs g ({self.spike_def.value}, {self.mode.value}, {self.adjacency.value}; "
                f"N1 {self.stack.null_draws} draws)")

    # ------------------------------------------------------------------ updates
    def update_lattice(self) -> None:
        """Redraw what depends on the gain and the sequence: heatmap, rates, markers; then the listeners."""
        self.labels, self.table = self._avalanches()
        counts, n = self.counts(), self.seq
        text = list(self.stack.token_text[n])
        with self.heatmap.batch_update():
            heat = self.heatmap.data[0]
            heat.z = _json_safe(plots.lattice_z(counts, self.stack.valid[n], self.labels))
            heat.text = plots.lattice_hover(counts, text, self.labels)
            self.heatmap.data[1].update(x=[], y=[])
            step = max(1, len(text) // 48)
            self.heatmap.layout.xaxis.ticktext = text[::step]
            self.heatmap.layout.title.text = self._title()
        with self.rates.batch_update():
            self.rates.data[0].y = self._layer_rates()
            self.rates.layout.title.text = self._rates_title()
        self._update_markers()
        for fn in self._listeners:
            fn()

    def _update_markers(self) -> None:
        sig = self.signatures()
        with self.curves.batch_update():
            for i, (col, _) in enumerate(CURVES):
                self.curves.data[len(CURVES) + i].update(x=[self.g], y=_json_safe([sig[col].iloc[self.gi]]))

    def update_all(self) -> None:
        """After a spike definition, threshold mode or adjacency change: the curves, then the lattice."""
        self.info.value = "<i>computing signatures…</i>"
        sig = self.signatures()
        with self.curves.batch_update():
            for i, (col, _) in enumerate(CURVES):
                self.curves.data[i].y = _json_safe(sig[col])
            self.curves.layout.title.text = self._curves_title()
        self.info.value = ""
        self.update_lattice()

    def show_selection(self, t: np.ndarray, l: np.ndarray) -> None:
        """Outline the sites (t, l) on the heatmap."""
        self.heatmap.data[1].update(x=np.asarray(t), y=np.asarray(l))


class AvalancheInspector:
    """One avalanche of the scrubber's lattice: picked by a click on a heatmap cell or from a
    size-sorted list; shows its tokens highlighted, layers, size, n_sites, spans and the spikes of its
    sites under both spike definitions; exports it (csv + json) to the stack's ``export_dir``."""

    def __init__(self, scrubber: GainScrubber, export_dir: str | Path | None = None):
        self.scrubber = scrubber
        self.export_dir = Path(export_dir) if export_dir else scrubber.stack.export_dir
        self.detail: dict[str, Any] | None = None
        self.choice = W.Dropdown(description="avalanche", layout=W.Layout(width="560px"))
        self.tokens = W.HTML()
        self.summary = W.HTML()
        self.sites = W.HTML()
        self.export_button = W.Button(description="export csv + json", icon="download",
                                      layout=W.Layout(width="180px"), disabled=self.export_dir is None)
        self.export_status = W.HTML()
        self._quiet = False
        self.choice.observe(self._on_choice, "value")
        self.export_button.on_click(lambda _: self.export())
        scrubber.heatmap.data[0].on_click(self._on_click)
        scrubber.on_lattice(self.refresh)
        self.widget = W.VBox([W.HBox([self.choice, self.export_button]), self.export_status, self.summary,
                              self.tokens, self.sites])
        self.refresh()

    def refresh(self) -> None:
        """New lattice on show: list its avalanches by size (largest first) and select the largest."""
        table = self.scrubber.table.sort_values(["size", "id"], ascending=[False, True])
        self._quiet = True
        try:
            self.choice.options = [(f"#{r.id}: {r.size} spikes, {r.n_sites} site{'s' * (r.n_sites != 1)}, "
                                    f"tokens {r.t0}–{r.t1}, layers {r.l0}–{r.l1}", int(r.id))
                                   for r in table.itertuples()]
        finally:
            self._quiet = False
        self.select(int(table.id.iloc[0]) if len(table) else None)

    def select(self, avalanche: int | None) -> None:
        """Show avalanche ``avalanche`` (an id of the scrubber's table), or nothing with None."""
        if avalanche is not None and self.choice.value != avalanche:
            self.choice.value = avalanche  # the observer shows it
            return
        self._show(avalanche)

    def _on_choice(self, change) -> None:
        if not self._quiet:
            self._show(change["new"])

    def _on_click(self, trace, points, state) -> None:
        if not points.xs:
            return
        t, l = int(round(points.xs[0])), int(round(points.ys[0]))
        k = int(self.scrubber.labels[t, l])
        if k:
            self.select(k)

    def _show(self, avalanche: int | None) -> None:
        s = self.scrubber
        if avalanche is None:
            self.detail = None
            self.summary.value = "<b>no avalanche in this lattice</b>"
            self.tokens.value = self.sites.value = ""
            s.show_selection([], [])
            return
        d = avalanche_detail.avalanche_detail(s.stack, s.gi, s.seq, avalanche, spike_def=s.spike_def.value,
                                              mode=s.mode.value, adjacency=s.adjacency.value)
        self.detail = d
        s.show_selection(d["sites"].token.to_numpy(), d["sites"].layer.to_numpy())
        self.summary.value = (
            f"<b>avalanche #{d['avalanche']}</b> of sequence {d['seq']} at g = {d['g']:g} "
            f"({d['spike_def']}, {d['threshold_mode']}, {d['adjacency']}): size <b>{d['size']}</b> spikes, "
            f"<b>{d['n_sites']}</b> sites, tokens {d['t0']}–{d['t1']} (span {d['t_span']}), "
            f"layers {', '.join(map(str, d['layers']))} (span {d['l_span']})")
        self.tokens.value = highlighted_text(s.stack.token_text[d["seq"]], s.stack.valid[d["seq"]],
                                             d["sites"].groupby("token")[f"spikes_{d['spike_def']}"].sum())
        self.sites.value = _sites_table(d["sites"])

    def export(self) -> tuple[Path, Path] | None:
        """Write the selection as csv and json under ``export_dir``; returns the two paths."""
        if self.detail is None or self.export_dir is None:
            self.export_status.value = "nothing to export" if self.detail is None else "no export folder"
            return None
        paths = avalanche_detail.export_avalanche(self.detail, self.export_dir)
        self.export_status.value = "exported " + ", ".join(html.escape(str(p)) for p in paths)
        return paths


def highlighted_text(tokens, valid, spikes) -> str:
    """HTML of a sequence's tokens with those in ``spikes`` (token index → spikes) highlighted, shade
    by spike count; masked tokens greyed."""
    top = max(spikes.max(), 1) if len(spikes) else 1
    parts = []
    for t, tok in enumerate(tokens):
        word = html.escape(str(tok).replace("·", " ")).replace("⏎", "⏎<br>")
        if t in spikes.index:
            alpha = 0.25 + 0.75 * spikes[t] / top
            parts.append(f'<span class="aval-hit" title="t={t}: {spikes[t]} spikes" '
                         f'style="background: rgba(220,40,40,{alpha:.2f}); color: black">{word}</span>')
        elif not valid[t]:
            parts.append(f'<span style="color: #aaa">{word}</span>')
        else:
            parts.append(f"<span>{word}</span>")
    return '<div style="font-family: monospace; line-height: 1.7; white-space: pre-wrap">' + "".join(parts) + "</div>"


def _sites_table(sites, limit: int = 200) -> str:
    shown = sites.head(limit).rename(columns={"spikes_pos": "spikes (pos)", "spikes_abs": "spikes (abs)"})
    more = f"<p>… {len(sites) - limit} more sites (export for all)</p>" if len(sites) > limit else ""
    table = shown.to_html(index=False, escape=True, border=0)
    return f'<div style="max-height: 260px; overflow-y: auto">{table}</div>{more}'


class Explorer:
    """A :class:`GainScrubber` and its :class:`AvalancheInspector`, shown together."""

    def __init__(self, stack: gs.GainStack, **view: Any):
        self.stack = stack
        self.scrubber = GainScrubber(stack, **view)
        self.inspector = AvalancheInspector(self.scrubber)
        header = W.HTML(f"<b>{html.escape(stack.source)}</b>: {stack.shape[1]} sequences × {stack.shape[2]} "
                        f"tokens × {stack.shape[3]} layers at {stack.shape[0]} gains")
        self.widget = W.VBox([header, self.scrubber.widget, self.inspector.widget])

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def explore(run_id: str | None = None, *, run_dir: str | Path | None = None, runs: str | Path | None = None,
            model: str | None = None, g: float = 1.0, spike_def: str = "pos", mode: str = "rate_matched",
            adjacency: str | None = None, seq: int = 0, cache: bool = True, lattice: str = "standard",
            **params: Any) -> Explorer:
    """Open the explorer on a run (``run_id`` under ``runs``, default ``outputs/runs``, or ``run_dir``) or
    on ``model`` computed live (``params``: any params key, e.g. ``n_sequences=4, gains=[...]``; the
    result is cached). Exactly one source must be given. ``lattice="first_token"`` shows a run's phase-08
    lattices, which keep the first token (the MA token of the embedded models)."""
    given = [name for name, v in (("run_id", run_id), ("run_dir", run_dir), ("model", model)) if v]
    if len(given) != 1:
        raise ValueError(f"give exactly one of run_id, run_dir or model (got {given or 'none'})")
    if params and not model:
        raise ValueError(f"params {sorted(params)} apply to a live model only")
    if model and lattice != "standard":
        raise ValueError("lattice= picks a run's lattices; a live model takes exclude_first_token=False instead")
    if model:
        stack = live_stack.compute(model, cache=cache, **params)
    else:
        stack = gs.from_run(run_dir if run_dir else gs.find_run(run_id, runs), lattice)
    return Explorer(stack, g=g, spike_def=spike_def, mode=mode, adjacency=adjacency, seq=seq)
