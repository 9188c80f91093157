"""Params schema: unknown keys, wrong types and out-of-range values fail with the key's name."""

from pathlib import Path

import pytest

from avalanche_nb import params as P

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_validate():
    assert P.validate({}) == P.defaults() and isinstance(P.validate({}), P.Params)


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml", "gpu.yaml"])
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
    ("rigidity_alphas", [0.0, -0.5], "rigidity_alphas"),
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


@pytest.mark.parametrize("changes,msg", [
    ({"train_warmup": 30, "train_steps": 16}, "train_warmup=30 exceeds train_steps=16"),
    ({"train_checkpoint_every": 50, "train_steps": 20, "train_warmup": 5}, "train_checkpoint_every=50 exceeds"),
    ({"train_tokens": 600, "train_window": 64}, "too few for train_probe_sequences"),
    ({"window": 8, "ma_top_k": 10}, "shorter than ma_top_k"),
])
def test_cross_key_constraints_are_refused(changes, msg):
    with pytest.raises(P.ParamsError, match=msg):
        P.validate(changes)


def test_params_are_read_only_and_read_as_attributes():
    p = P.validate({"seed": 3})
    assert p.seed == p["seed"] == 3 and dict(p)["seed"] == 3
    with pytest.raises(AttributeError, match="read-only"):
        p.seed = 4
    with pytest.raises(AttributeError, match="did you mean 'seed'"):
        p.sed


def test_the_old_rule_name_is_accepted_with_its_new_name():
    with pytest.warns(FutureWarning, match="z_tot_n1_max"):
        assert P.validate({"gstar_rule": "delta_b_max"}).gstar_rule == "z_tot_n1_max"


#: parameters named like a params key that mean something else, with their own default
_NOT_THE_KEY = {("avalanche_nb.emergence", "fit", "model")}  # the emergence curve, e.g. "ma5"


def _package_signatures():
    """(module, qualified name, inspect.Signature) of every function, method and class of the package."""
    import importlib
    import inspect
    import pkgutil

    import avalanche_nb

    for info in pkgutil.iter_modules(avalanche_nb.__path__):
        module = importlib.import_module(f"avalanche_nb.{info.name}")
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # imported from elsewhere: checked where it is defined
            members = [(name, obj)]
            if inspect.isclass(obj):
                members += [(f"{name}.{m}", f) for m, f in vars(obj).items() if inspect.isfunction(f)]
            for qualname, fn in members:
                if callable(fn):
                    try:
                        yield module.__name__, qualname, inspect.signature(fn)
                    except (TypeError, ValueError):  # builtins without a signature
                        continue


def test_the_schema_is_the_only_home_of_defaults():
    """No function gives an argument named like a params key a default of its own (``None`` may stand for
    'read it elsewhere', e.g. off the gain stack, unless the schema's default is ``None`` too)."""
    restated = []
    for module, qualname, sig in _package_signatures():
        for arg in sig.parameters.values():
            if arg.name not in P.SCHEMA or arg.default is arg.empty:
                continue
            if (module, qualname.split(".")[-1], arg.name) in _NOT_THE_KEY:
                continue
            if arg.default is not None or P.SCHEMA[arg.name].default is None:
                restated.append(f"{module}.{qualname}({arg.name}={arg.default!r})")
    assert not restated, f"defaults restated outside the params schema: {restated}"
