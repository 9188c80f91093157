"""Every figure a phase notebook shows, exported beside the notebook: its data as ``<name>.csv`` and,
when a headless Chromium runs (kaleido), the figure as ``<name>.svg`` and ``<name>.png``, so a figure can
go into a talk or a paper without re-running. ``$AVALANCHE_NB_FIGURE_IMAGES=0`` keeps the CSV only."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

FIGURES = "figures"  # the subfolder of a phase folder that holds its exported figures
IMAGE_WIDTH = 1000  # px of an exported image whose layout sets no width (about a notebook's output width)
PNG_SCALE = 2  # PNGs at twice the layout's pixels: sharp on slides and in print
BROWSER_START_S = 90.0  # seconds Chromium may take to start; a render waits RENDER_S
RENDER_S = 60.0
CHROMIUM_FIX = "apt-get install chromium"

_folder: Path | None = None  # the current phase's output folder (runtime.start sets it), None: display only
_browser = None  # this process's headless Chromium (one for every figure of a notebook), once started
_no_images: str | None = None  # why SVG/PNG are not written in this process (said once), None: not known yet
IMAGES_ENV = "AVALANCHE_NB_FIGURE_IMAGES"  # "0": CSV only (test runs whose figures nobody looks at)


def export_to(folder: str | Path | None) -> None:
    """Make :func:`show` export into ``folder / FIGURES`` (``runtime.start`` passes the phase's output
    folder); None: :func:`show` only displays."""
    global _folder
    _folder = None if folder is None else Path(folder)


def slug(name: str) -> str:
    """``name`` as a file name: lower case, runs of anything but ``[a-z0-9.-]`` as one ``_``."""
    out = re.sub(r"[^a-z0-9.-]+", "_", str(name).lower()).strip("_.")
    if not out:
        raise ValueError(f"figure name {name!r} has nothing usable as a file name")
    return out


def export_current(fig: go.Figure, name: str) -> None:
    """Export ``fig`` into the current phase's ``figures/`` folder (set by :func:`export_to`); nothing
    outside a phase."""
    if _folder is not None:
        from . import provenance

        with provenance.timed(_folder, "figure_export"):
            export(fig, name, _folder / FIGURES)


def export(fig: go.Figure, name: str, folder: str | Path) -> list[Path]:
    """Write ``fig``'s data as ``folder/<slug(name)>.csv`` (:func:`figure_table`) and, when a headless
    Chromium runs, the figure as ``.svg`` and ``.png`` (one browser per process, started at the first
    figure; without one, only the CSV, and one printed line says why). Returns the files written."""
    from . import provenance

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = slug(name)
    written = [provenance.save_csv(folder / f"{stem}.csv", figure_table(fig))]
    browser = _image_browser()
    if browser is None:
        return written
    width = fig.layout.width or IMAGE_WIDTH
    height = fig.layout.height or 500
    spec = fig.to_dict()
    for i, trace in enumerate(spec["data"]):  # plotly.js would draw random trace ids into the SVG
        trace.setdefault("uid", f"trace{i}")
    try:
        for fmt, scale in (("svg", 1), ("png", PNG_SCALE)):
            data = browser.render(spec, fmt, width, height, scale)
            if fmt == "svg":
                data = stable_svg_ids(data.decode()).encode()
            written.append(provenance.atomic_write(folder / f"{stem}.{fmt}", lambda tmp: tmp.write_bytes(data)))
    except Exception as err:  # noqa: BLE001 - a derived view: the run goes on without images
        _images_off(f"rendering {stem} failed ({type(err).__name__}: {err})")
    return written


def stable_svg_ids(svg: str) -> str:
    """``svg`` with its element ids (random in plotly.js: clip paths, defs, legend) renamed ``f0``, ``f1``,
    ... in order of appearance, references (``url(#id)``, ``href="#id"``) with them: the same figure gives
    the same bytes."""
    names: dict[str, str] = {}
    for old in re.findall(r'(?<![\w-])id="([^"]+)"', svg):
        names.setdefault(old, f"f{len(names)}")
    svg = re.sub(r'(?<![\w-])id="([^"]+)"', lambda m: f'id="{names[m.group(1)]}"', svg)
    return re.sub(r'#([^\s"\')#;]+)', lambda m: "#" + names.get(m.group(1), m.group(1)), svg)


def _images_off(reason: str) -> None:
    global _browser, _no_images
    _no_images = reason
    print(f"figures: CSV only, no SVG/PNG from here on: {reason}")
    if _browser is not None:
        _browser.close()
        _browser = None


def _image_browser():
    """This process's running browser; started at the first call (None, said once, where it cannot)."""
    global _browser
    if _browser is not None or _no_images is not None:
        return _browser
    if os.environ.get(IMAGES_ENV) == "0":
        _images_off(f"${IMAGES_ENV}=0")
        return None
    try:
        _browser = _Browser()
    except ImportError:
        _images_off("kaleido is not installed (pip install kaleido==1.5.1)")
    except Exception as err:  # noqa: BLE001
        detail = " ".join(str(err).split())[:160] or f"no answer within {BROWSER_START_S:g} s"
        why = ("Chromium was not found" if type(err).__name__ == "ChromeNotFoundError" else
               f"Chromium did not start ({type(err).__name__}: {detail})")
        _images_off(f"{why}; `{CHROMIUM_FIX}` (as root) adds them to later runs")
    return _browser


class _Browser:
    """One headless Chromium driven by kaleido on an event loop of its own thread, so a notebook pays its
    start (seconds) once, and every wait is bounded (a browser that hangs cannot hang the notebook)."""

    def __init__(self) -> None:
        import asyncio
        import atexit
        import threading

        import kaleido  # noqa: F401 - ImportError here: no images

        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="kaleido", daemon=True).start()
        try:
            self._kaleido = self._wait(self._open(), BROWSER_START_S)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise
        self._closed = False
        atexit.register(self.close)

    def _wait(self, coro, timeout: float):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @staticmethod
    async def _open():
        import kaleido

        # plotly.js from the plotly package (kaleido's default); no MathJax: it would come from a CDN
        k = kaleido.Kaleido(n=1, timeout=RENDER_S, mathjax=False)
        try:
            await k.open()
        except BaseException:
            try:
                await k.close()
            finally:
                raise
        return k

    def render(self, fig: go.Figure, fmt: str, width: float, height: float, scale: float) -> bytes:
        opts = dict(format=fmt, width=width, height=height, scale=scale)
        return self._wait(self._kaleido.calc_fig(fig, opts=opts), RENDER_S + 10)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._wait(self._kaleido.close(), 15)
        except Exception:  # noqa: BLE001 - closing at exit: nothing left to report to
            pass
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)


def _panel_names(fig: go.Figure) -> dict[str, str]:
    """x axis id ("x", "x2", ...) -> the subplot's title (its axis id where it has none); {} for one panel."""
    grid = getattr(fig, "_grid_ref", None)
    if not grid:
        return {}
    cells = [cell[0] for row in grid for cell in row if cell]
    if len(cells) < 2:
        return {}
    # make_subplots adds its subplot titles first, in the order of its cells (paper-referenced annotations)
    titles = [a.text for a in fig.layout.annotations if a.xref == "paper" and a.yref == "paper"]
    axes = [c.trace_kwargs.get("xaxis", "x") for c in cells]
    return {ax: (titles[k] if len(titles) >= len(cells) else ax) for k, ax in enumerate(axes)}


def _axis_title(fig: go.Figure, axis: str | None, letter: str) -> str:
    """The title of axis ``axis`` ("x2", "y", None = first) or of the figure's first axis of that letter."""
    layout = fig.layout.to_plotly_json()
    for key in (f"{letter}axis{(axis or letter)[1:]}", f"{letter}axis"):
        title = (layout.get(key) or {}).get("title") or {}
        if title.get("text"):
            return str(title["text"])
    return ""


def _column(values, n: int):
    """A trace attribute as n values: arrays as they are, a scalar repeated, None as None."""
    if values is None:
        return None
    if isinstance(values, str) or np.ndim(values) == 0:
        return [values] * n
    return list(values)


def _errors(err, n: int) -> tuple[list | None, list | None]:
    """(minus, plus) of an ``error_x``/``error_y`` with ``type="data"`` (None, None without one)."""
    if err is None or err.array is None or err.visible is False or (err.type not in (None, "data")):
        return None, None
    plus = _column(err.array, n)
    minus = _column(err.arrayminus, n) if err.symmetric is False and err.arrayminus is not None else plus
    return minus, plus


TIDY_COLUMNS = ("trace", "panel", "x", "y", "z", "error_x_minus", "error_x_plus", "error_y_minus", "error_y_plus",
                "text", "hovertext")


def figure_table(fig: go.Figure):
    """A figure's data as one table, good enough to re-plot it.

    Only heatmaps: z as a matrix, one row per y value (first column, named ``<y title> \\ <x title>``)
    and one column per x value; several heatmaps are stacked with a leading ``trace`` column (the trace's
    name or its subplot's title). Otherwise tidy, one row per point: ``trace`` (name), ``panel`` (subplot
    title, with several subplots), ``x``, ``y`` (``z`` of a heatmap), ``error_y_minus``/``_plus`` (and x)
    where error bars are drawn, ``text``/``hovertext`` where set; columns without a value are left out.
    """
    import pandas as pd

    traces, panels = list(fig.data), _panel_names(fig)
    label = lambda i, t: t.name or panels.get(getattr(t, "xaxis", None) or "x") or f"trace {i}"  # noqa: E731
    if traces and all(t.type == "heatmap" for t in traces):
        frames = []
        for i, t in enumerate(traces):
            z = np.array(t.z, dtype=float)
            rows, cols = z.shape
            x = list(t.x) if t.x is not None else list(range(cols))
            y = list(t.y) if t.y is not None else list(range(rows))
            corner = f"{_axis_title(fig, t.yaxis, 'y') or 'y'} \\ {_axis_title(fig, t.xaxis, 'x') or 'x'}"
            df = pd.DataFrame(z, columns=x)
            values = z[~np.isnan(z)]
            if values.size and np.all(values == np.round(values)) and np.abs(values).max() < 2**53:
                df = df.astype("Int64")  # counts stay integers ("3", not "3.0"); NaN stays blank
            df.insert(0, corner, y)
            if len(traces) > 1:
                df.insert(0, "trace", label(i, t))
            frames.append(df)
        return pd.concat(frames, ignore_index=True)
    frames = []
    for i, t in enumerate(traces):
        cols: dict = {}
        if t.type == "heatmap":
            z = np.array(t.z, dtype=float)
            x = list(t.x) if t.x is not None else list(range(z.shape[1]))
            y = list(t.y) if t.y is not None else list(range(z.shape[0]))
            cols["x"], cols["y"], cols["z"] = np.tile(x, len(y)).tolist(), np.repeat(y, len(x)).tolist(), z.ravel()
            n = z.size
        else:
            y = getattr(t, "y", None)
            x = getattr(t, "x", None)
            n = len(y) if y is not None else len(x) if x is not None else 0
            cols["x"] = list(x) if x is not None else list(range(n))
            cols["y"] = list(y) if y is not None else None
            for axis in ("x", "y"):
                minus, plus = _errors(getattr(t, f"error_{axis}", None), n)
                cols[f"error_{axis}_minus"], cols[f"error_{axis}_plus"] = minus, plus
            for attr in ("text", "hovertext"):
                cols[attr] = _column(getattr(t, attr, None), n)
        cols = {k: v for k, v in cols.items() if v is not None}
        frame = pd.DataFrame(cols, index=range(n))
        frame.insert(0, "trace", label(i, t))
        if panels:
            frame.insert(1, "panel", panels.get(t.xaxis or "x", t.xaxis or "x"))
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trace", "x", "y"])
    return table[[c for c in TIDY_COLUMNS if c in table.columns]]
