"""Deterministic notebook set-up shared by every phase: offline mode, threads, seeds, plot renderer,
and the Dataset A / B slices every phase agrees on."""

from __future__ import annotations

import os
import random

import numpy as np


def configure(seed: int = 0, torch_threads: int = 2) -> None:
    """Offline hub, fixed CPU threads and seeds (same params, same numbers on CPU), offline plotly."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import plotly.io as pio
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    # the mimetype renders in JupyterLab; the inline html (plotly.js embedded once) keeps archived
    # notebooks readable offline, where "notebook_connected" would need a CDN
    pio.renderers.default = "plotly_mimetype+notebook"


def dataset_a_slices(tokenizer, source: str, n_calibration: int, n_sequences: int, window: int, seed: int):
    """(calibration, lattice) slices of Dataset A: consecutive, disjoint windows of one seeded stream."""
    from .data import build_slice

    calib = build_slice(tokenizer, source, n_calibration, window, seed=seed, offset=0)
    lattice = build_slice(tokenizer, source, n_sequences, window, seed=seed, offset=n_calibration)
    return calib, lattice


def token_strings(tokenizer, ids) -> list[str]:
    """Readable token strings for axis labels (whitespace made visible)."""
    return [tokenizer.decode([int(i)]).replace(" ", "·").replace("\n", "⏎") for i in ids]
