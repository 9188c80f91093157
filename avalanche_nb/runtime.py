"""What every phase notebook does first: its params, a deterministic set-up (offline hub, fixed CPU
threads and seeds, an offline plot renderer) and the folder its artifacts and figures go to."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

from . import figure_export
from . import params as P
from . import provenance

PLOTLY_JS = "plotly.min.js"  # in the run folder, beside the phase folders: what archived notebooks load


def write_plotly_js(run_dir: Path) -> None:
    """Put plotly.js into the run folder once, so every archived notebook's figures draw offline."""
    target = Path(run_dir) / PLOTLY_JS
    if not target.exists():
        from plotly.offline import get_plotlyjs

        provenance.atomic_write(target, lambda tmp: tmp.write_text(get_plotlyjs()))


def configure(seed: int, torch_threads: int) -> None:
    """Offline hub, fixed CPU threads and seeds (same params, same numbers on CPU), offline plotly."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import plotly.io as pio
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    # the mimetype renders in JupyterLab; the html part keeps archived notebooks readable in a browser
    # offline. It loads plotly.js from the run folder (PLOTLY_JS, written once per run by the runner)
    # instead of embedding its 4.8 MB in every notebook, or fetching it from a CDN
    from plotly.io.base_renderers import HtmlRenderer

    pio.renderers["run_html"] = HtmlRenderer(include_plotlyjs=f"../{PLOTLY_JS}")
    pio.renderers.default = "plotly_mimetype+run_html"


def start(run_dir: str, phase: str) -> tuple[P.Params, Path]:
    """(params, output folder) of phase ``phase`` in the run ``run_dir``, after :func:`configure`.

    The params are the run's resolved ``params.yaml`` (the schema's defaults when a notebook is opened
    without a run); the folder is the phase's staging folder (:func:`provenance.phase_output`), where
    :func:`plots.show` exports the notebook's figures too (``figures/``).
    """
    from . import progress

    p = P.for_run(run_dir)
    configure(p.seed, p.torch_threads)
    progress.ENABLED = p.progress
    out = provenance.phase_output(run_dir, phase)
    figure_export.export_to(out)
    return p, out
