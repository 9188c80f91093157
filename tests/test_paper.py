"""The paper of the smoke run: built from hash-checked artifacts, compiled without undefined references,
every number equal to a recomputation from its artifact, every included figure a valid PDF, a tampered
run refused and a missing phase dropped with a visible sentence."""

import json
import math
import re
import shutil
import subprocess

import numpy as np
import pytest

from avalanche_nb import artifacts, paper, provenance, runner, system
from avalanche_nb import params as P

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(run_dir, tmp_path_factory):
    paper.install_tex()
    system.ensure("pdftotext", ("poppler-utils",))
    return paper.build(run_dir, tmp_path_factory.mktemp("paper") / "smoke")


def pdf_text(path) -> str:
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_the_paper_compiles_without_undefined_references(built):
    assert (built / "main.pdf").stat().st_size > 50_000
    assert paper.log_problems(built) == []
    text = pdf_text(built / "main.pdf")
    assert "??" not in text and "n/a" not in text.split("Appendix")[0]
    m = json.loads((built / "manifest.json").read_text())
    assert m["run_id"] == "smoke" and "main.pdf" in m["files"] and "03_gain_sweep/sweep.parquet" in m["inputs"]


def recompute(source: dict, run_dir, numbers: dict) -> float:
    """A number from its recorded source, independently of avalanche_nb.results."""
    if "ratio" in source:
        a, b = source["ratio"]
        return numbers[a]["value"] / numbers[b]["value"]
    if "params" in source:
        value = P.for_run(run_dir)[source["params"]]
        return float(value[source.get("index", 0)] if isinstance(value, list) else value)
    obj = artifacts.read(run_dir, source["artifact"])
    if "path" in source:
        for key in source["path"]:
            obj = obj[key]
        return float(obj) * source.get("scale", 1.0)
    sel = obj
    for k, v in source["row"].items():
        sel = sel[np.isclose(sel[k], v)] if isinstance(v, float) else sel[sel[k] == v]
    reduce = source.get("reduce")
    col = sel[source["column"]]
    if reduce is None:
        assert len(sel) == 1
        return float(col.iloc[0])
    return float({"min": col.min(), "max": col.max(), "mean": col.mean(), "max_abs": col.abs().max(),
                  "count": len(col)}[reduce])


def test_every_number_equals_its_recomputation_from_the_artifact(built, run_dir):
    numbers = json.loads((built / "numbers.json").read_text())["numbers"]
    tex = (built / "numbers.tex").read_text()
    params_gains = sorted(P.for_run(run_dir).gains)
    for name, n in numbers.items():
        if n["source"].get("params") == "gains":
            expected = {"ParamGainLow": params_gains[0], "ParamGainHigh": params_gains[-1],
                        "ParamGainCount": len(params_gains)}[name]
        elif n["source"].get("params") == "target_rates":
            value = P.for_run(run_dir).target_rates
            expected = value[0] if name == "ParamTargetRateSeed" else len(value)
        else:
            expected = recompute(n["source"], run_dir, numbers)
        if n["value"] is None or (isinstance(n["value"], float) and math.isnan(n["value"])):
            assert expected is None or math.isnan(expected), name
        else:
            assert n["value"] == pytest.approx(expected, rel=1e-12, abs=1e-15), name
        assert f"\\newcommand{{\\{name}}}{{{n['text']}}}" in tex


def test_every_included_figure_exists_and_is_a_pdf(built):
    tex = "\n".join(p.read_text() for p in [built / "main.tex", *sorted((built / "sections").glob("*.tex"))])
    included = set(re.findall(r"\\includegraphics(?:\[[^\]]*\])?\{figures/([^}]+)\}", tex))
    assert included, "the paper includes no figure"
    for name in included:
        path = built / "figures" / (name if name.endswith(".pdf") else name + ".pdf")
        assert path.read_bytes()[:5] == b"%PDF-", name
        assert subprocess.run(["pdfinfo", str(path)], capture_output=True).returncode == 0, name


def test_a_tampered_run_is_refused_naming_the_file(run_dir, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(run_dir, copy)
    path = copy / "03_gain_sweep" / "sweep.parquet"
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(runner.UnverifiedRunError, match="03_gain_sweep/sweep.parquet"):
        paper.build(copy, tmp_path / "out", compile_pdf=False)


def test_a_missing_phase_drops_its_section_with_a_visible_sentence(run_dir, tmp_path):
    copy = tmp_path / "partial"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "07_training_dynamics")
    out = paper.build(copy, tmp_path / "out")
    assert "\\hastrainingfalse" in (out / "numbers.tex").read_text()
    text = " ".join(pdf_text(out / "main.pdf").split())
    assert "This run has no phase 07" in text
    assert provenance.sha256_file(copy / "03_gain_sweep" / "sweep.parquet") == \
        provenance.sha256_file(run_dir / "03_gain_sweep" / "sweep.parquet")
