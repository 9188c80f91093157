"""The explorer in a real browser: JupyterLab on loopback (token auth), Debian's headless Chromium
driven by Playwright, ``explore.ipynb`` opened on the smoke run, every cell run, the gain slider moved
with the keyboard, the heatmap checked to have changed, and a screenshot saved.

Installs Chromium with apt when it is missing. A browser that cannot be installed or started fails the
test with the reason; it never skips in CI (``AVALANCHE_NB_SKIP_BROWSER=1`` skips it elsewhere, on
request only).
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from avalanche_nb import system

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic"]
#: the heatmap: the plotly graph whose title is the scrubber's
HEATMAP_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].find(
    d => d.layout && d.layout.title && String(d.layout.title.text || d.layout.title).startsWith('sequence'))"""
HEATMAP_STATE_JS = f"() => {{ const d = ({HEATMAP_JS})(); return [String(d.layout.title.text), JSON.stringify(d.data[0].z)]; }}"
#: the notebook is open and its kernel idle
KERNEL_IDLE_JS = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return k && k.status === 'idle'; }"""
#: every code cell has run and the kernel is idle again
ALL_RUN_JS = """() => {
    const w = window.jupyterapp.shell.currentWidget;
    const cells = w.content.widgets.filter(c => c.model.type === 'code');
    return cells.every(c => c.model.executionCount !== null) && w.sessionContext.session.kernel.status === 'idle'; }"""
ERRORS_JS = """() => [...document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(e => e.innerText).join('\\n')"""
#: [id, token, layer] of the first one-site avalanche in the inspector's list (ipywidgets renders spaces as nbsp)
ONE_SITE_AVALANCHE_JS = r"""() => {
    const opts = [...document.querySelectorAll('select option')].map(o => o.textContent);
    const m = opts.map(o => o.match(/^#(\d+):\s\d+\sspikes,\s1\ssite,\stokens\s(\d+)–\d+,\slayers\s(\d+)–/)).find(x => x);
    return [Number(m[1]), Number(m[2]), Number(m[3])]; }"""
#: page coordinates of the heatmap cell [token, layer]
CELL_XY_JS = f"""([t, l]) => {{ const d = ({HEATMAP_JS})(), fl = d._fullLayout, r = d.getBoundingClientRect();
    return [r.left + fl.xaxis._offset + fl.xaxis.l2p(t), r.top + fl.yaxis._offset + fl.yaxis.l2p(l)]; }}"""


def _chromium() -> str:
    """Path of Debian's chromium, installed with apt when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("AVALANCHE_NB_SKIP_BROWSER") == "1" and not os.environ.get("CI"):
        pytest.skip("AVALANCHE_NB_SKIP_BROWSER=1 and no chromium installed")
    try:
        return system.ensure("chromium", ("chromium",))
    except system.SystemToolError as err:
        pytest.fail(str(err))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(folder: Path) -> None:
    """JupyterLab user settings: no news or update pop-ups, every cell rendered (no windowing)."""
    settings = {"@jupyterlab/apputils-extension/notification": {"checkForUpdates": False, "fetchNews": "false"},
                "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"}}
    for name, value in settings.items():
        path = folder / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


@pytest.fixture
def lab(run_dir, tmp_path):
    """A JupyterLab server on loopback serving a copy of explore.ipynb parameterised for the smoke run."""
    import papermill

    root = tmp_path / "lab"
    root.mkdir()
    papermill.execute_notebook(str(ROOT / "notebooks" / "explore.ipynb"), str(root / "explore.ipynb"),
                               parameters={"run_dir": str(run_dir)}, prepare_only=True, kernel_name="avalanche-nb")
    _write_settings(tmp_path / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = os.environ | {"JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
                        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
                        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited ({proc.returncode}):\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"JupyterLab did not answer in 120 s:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_explorer_runs_and_scrubs_in_chromium(lab, tmp_path):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    url, token = lab
    chromium = _chromium()
    shot = tmp_path / "explore.png"
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        except PlaywrightError as err:
            pytest.fail(f"chromium ({chromium}) did not start: {err}")
        page = browser.new_page(viewport={"width": 1600, "height": 2000})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{url}/lab/tree/explore.ipynb?token={token}")
        page.wait_for_function(KERNEL_IDLE_JS, timeout=120_000)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(ALL_RUN_JS, timeout=300_000)
        errors = page.evaluate(ERRORS_JS)
        assert "Error" not in errors, errors[-3000:]
        page.wait_for_function(f"() => !!({HEATMAP_JS})()", timeout=120_000)
        before = page.evaluate(HEATMAP_STATE_JS)
        assert before[0].startswith("sequence 0 · g = 1 ·"), before[0]

        handle = page.locator(".widget-slider .noUi-handle").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        t0 = time.perf_counter()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => String(({HEATMAP_JS})().layout.title.text).includes('g = 1.2')",
                               timeout=60_000)
        print(f"key press to redrawn heatmap: {1000 * (time.perf_counter() - t0):.0f} ms (browser, kernel and back)")
        after = page.evaluate(HEATMAP_STATE_JS)
        assert after[1] != before[1], "the heatmap's data did not change with the gain"
        assert page.locator(".widget-readout").first.inner_text().strip() == "1.2"
        page.wait_for_timeout(500)  # let plotly finish drawing before the picture
        output = page.locator(".jp-OutputArea-output:has(.js-plotly-plot)").first
        output.screenshot(path=str(shot))

        # click the cell of a one-site avalanche (read off the inspector's list) and see it inspected
        k, t, l = page.evaluate(ONE_SITE_AVALANCHE_JS)
        page.mouse.click(*page.evaluate(CELL_XY_JS, [t, l]))
        page.wait_for_function("k => [...document.querySelectorAll('.widget-html')].some("
                               "e => e.innerText.startsWith(`avalanche #${k} of sequence 0 at g = 1.2`))",
                               arg=k, timeout=30_000)
        output.screenshot(path=str(tmp_path / "explore_click.png"))
        browser.close()
    outside = [u for u in requests if not u.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:"))]
    assert not outside, f"the page fetched from outside loopback (no CDN allowed): {outside[:5]}"
    keep = ROOT / "outputs" / "test-artifacts"
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("explore.png", "explore_click.png"):
        shutil.copy(tmp_path / name, keep / f"browser_{name}")
    print(f"screenshots: {shot} after the slider, explore_click.png after the click (copied to {keep}/browser_*)")
    assert shot.stat().st_size > 20_000
