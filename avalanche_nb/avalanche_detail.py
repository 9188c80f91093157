"""One avalanche of a gain stack: the components of one sequence's lattice, the detail of one of them
(its sites under both spike definitions, spans, layers, tokens) and its export as csv + json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import avalanches as av
from . import provenance
from .gain_stack import GainStack, check_key
from .options import SPIKE_DEFS

def sequence_avalanches(counts: np.ndarray, valid: np.ndarray, adjacency: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Avalanches of one sequence's lattice ``counts`` int [T, L] (``valid`` bool [T]).

    Returns labels int32 [T, L] (0 = no event, k = avalanche k) and the table (``avalanches.TABLE_COLUMNS``
    plus ``id`` = k and ``t1``, ``l1``, the last token and top layer), row k - 1 for avalanche k.
    """
    labels, _ = av.label_avalanches(av.occupancy(counts[None], valid[None]), adjacency)
    table = av.avalanche_table(counts[None], valid[None], adjacency=adjacency).drop(columns="seq")
    table.insert(0, "id", np.arange(1, len(table) + 1))
    table["t1"] = table.t0 + table.t_span - 1
    table["l1"] = table.l0 + table.l_span - 1
    return labels[0], table


def avalanche_detail(stack: GainStack, gi: int, seq: int, avalanche: int, *, spike_def: str = "pos",
                     mode: str = "rate_matched", adjacency: str | None = None) -> dict[str, Any]:
    """Everything about avalanche ``avalanche`` (its id in :func:`sequence_avalanches`) of sequence ``seq``
    at gain index ``gi``: its sites with their spike counts under both spike definitions (same gain and
    threshold mode), size (spikes), n_sites, spans, layers and the tokens it spans. ``adjacency``
    ``None``: the stack's."""
    check_key(spike_def, mode)
    adjacency = adjacency or stack.adjacency
    labels, table = sequence_avalanches(stack.lattice(spike_def, mode, gi)[seq], stack.valid[seq], adjacency)
    if not 1 <= avalanche <= len(table):
        raise ValueError(f"sequence {seq} has avalanches 1..{len(table)} at g = {stack.g[gi]:g}, not {avalanche}")
    row = table.iloc[avalanche - 1]
    t, l = np.nonzero(labels == avalanche)
    sites = pd.DataFrame({"token": t, "layer": l, "text": stack.token_text[seq][t]})
    for d in SPIKE_DEFS:
        sites[f"spikes_{d}"] = stack.lattice(d, mode, gi)[seq][t, l]
    t0, t1 = int(row.t0), int(row.t1)
    return {"source": stack.source, "g": float(stack.g[gi]), "spike_def": spike_def, "threshold_mode": mode,
            "adjacency": adjacency, "seq": int(seq), "avalanche": int(avalanche), "size": int(row["size"]),
            "n_sites": int(row.n_sites), "t_span": int(row.t_span), "l_span": int(row.l_span), "t0": t0, "t1": t1,
            "layers": sorted(set(l.tolist())), "tokens": stack.token_text[seq][t0:t1 + 1].tolist(),
            "token_ids": stack.tokens[seq][t0:t1 + 1].tolist(), "sites": sites}


def export_avalanche(detail: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write one avalanche's detail as ``<stem>.json`` (everything, sites included) and ``<stem>.csv``
    (its sites), atomically, under ``out_dir``. Returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = (f"avalanche_g{detail['g']:g}_{detail['spike_def']}_{detail['threshold_mode']}_{detail['adjacency']}"
            f"_seq{detail['seq']}_id{detail['avalanche']}")
    sites = detail["sites"]
    js = provenance.save_json(out_dir / f"{stem}.json", {k: v for k, v in detail.items() if k != "sites"}
                              | {"sites": sites.to_dict(orient="records")})
    csv = provenance.save_csv(out_dir / f"{stem}.csv", sites)
    return js, csv
