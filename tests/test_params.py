"""Params schema: unknown keys, wrong types and out-of-range values fail with the key's name."""

from pathlib import Path

import pytest

from avalanche_nb import cli
from avalanche_nb import params as P

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_validate():
    assert P.validate({}) == P.defaults()


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml"])
def test_shipped_params_files_validate(name):
    P.load(ROOT / "params" / name)


def test_mistyped_key_is_named_with_a_suggestion():
    with pytest.raises(P.ParamsError, match=r"unknown params key 'n_sequence'.*did you mean 'n_sequences'"):
        P.validate({"n_sequence": 4})


@pytest.mark.parametrize("key,value,msg", [
    ("target_rates", [0.0], r"\(0, 1\)"),
    ("target_rates", [1.5], r"\(0, 1\)"),
    ("target_rates", [], "at least one"),
    ("target_rates", 1e-5, "must be list"),
    ("n_sequences", "16", "must be int"),
    ("n_sequences", 0, "> 0"),
    ("exclude_first_token", 1, "must be bool"),
    ("adjacencies", ["hexagonal"], "must be one of"),
    ("dataset_a", "wikitext", "must be one of"),
    ("model", None, "may not be null"),
    ("gains", [0.5, 0.9, 1.1], "must include 1.0"),
    ("gains", [], "empty"),
    ("gains", [-1.0, 1.0], ">= 0"),
    ("ablations", ["middle"], "must be one of"),
    ("ablations", ["early", "late"], "must include 'all'"),
    ("null_draws", 0, "> 0"),
    ("gof_draws", -1, ">= 0"),
    ("alpha_range", [0.9, 3.0], "1 < min < max"),
])
def test_bad_values_are_refused(key, value, msg):
    with pytest.raises(P.ParamsError, match=msg):
        P.validate({key: value})


def test_params_file_errors_name_the_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("windw: 64\n")
    with pytest.raises(P.ParamsError, match="p.yaml.*'windw'.*'window'"):
        P.load(f)
    with pytest.raises(P.ParamsError, match="does not exist"):
        P.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize("phase", cli.PHASES)
def test_notebook_parameters_agree_with_the_schema(phase):
    """Every key a notebook declares is a schema key with the same default (or a runner key)."""
    declared = cli.declared_parameters(cli.read_notebook(phase))
    for key, value in declared.items():
        if key in P.RUNNER_KEYS:
            continue
        assert key in P.SCHEMA, f"{phase} declares unknown key {key}"
        assert value == P.SCHEMA[key].default, f"{phase}: default of {key} differs from the schema"
    assert declared["phase"] == phase


@pytest.mark.parametrize("phase", cli.PHASES)
def test_papermill_sees_every_declared_parameter(phase):
    """papermill skips a parameter line holding a second '=' (e.g. in its comment) and warns at run time."""
    import papermill

    nb = cli.read_notebook(phase)
    path = ROOT / "notebooks" / f"{phase}.ipynb"
    assert set(papermill.inspect_notebook(str(path))) == set(cli.declared_parameters(nb))


def test_readme_documents_every_key():
    """The README's params table is the schema's own (regenerate with `avalanche-nb params`)."""
    assert P.markdown_table() in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("phase", cli.PHASES + ("explore",))
def test_ipynb_is_in_sync_with_its_py_source(phase):
    import jupytext

    py = jupytext.read(ROOT / "notebooks" / f"{phase}.py")
    nb = jupytext.read(ROOT / "notebooks" / f"{phase}.ipynb")
    assert [c.source for c in py.cells] == [c.source for c in nb.cells], f"run `make sync` ({phase})"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "keep .ipynb unexecuted in git"
