# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (avalanche-nb)
#     language: python
#     name: avalanche-nb
# ---

# %% [markdown]
# # 00 · Data and model
#
# Loads the model offline (the embedded GGUF is dequantised once and cached as safetensors), builds
# the fixed text slices every later phase uses, and shows their hashes and a decoded sample.
#
# * **Dataset A** — calibration slice (`mu`, `sigma` of the MLP tap) and lattice slice: disjoint,
#   consecutive windows of one seeded stream of `dataset_a`;
# * **Dataset B** — a different source, held out for transfer checks.
#
# Artifacts: `model.json`, `slices.json` (slice definitions and sha256 of their token ids), `slices.npz`
# (the token ids, which later phases read instead of tokenising again). All settings come from the
# run's params (`avalanche-nb params` lists them).

# %% tags=["parameters"]
run_dir = ""  # the run folder, injected by `avalanche-nb run` (empty: the defaults, artifacts to a scratch folder)

# %%
import pandas as pd

from avalanche_nb import artifacts, hooks, pipeline, provenance, runtime
from avalanche_nb.models import load_model

p, out = runtime.start(run_dir, "00_data_and_model")

# %% [markdown]
# ## Model

# %%
with provenance.timed(out, "load_model"):
    lm = load_model(p.model, dtype=p.dtype, device=p.device, seed=p.seed, device_map=p.device_map)
arch = hooks.architecture(lm.model)
info = lm.describe() | {"d_ff": arch.d_ff, "gated_mlp": arch.gated,
                        "n_parameters": sum(x.numel() for x in lm.model.parameters())}
artifacts.write(out, "model.json", info)
pd.Series(info, name="model").to_frame()

# %% [markdown]
# ## Slices

# %%
with provenance.timed(out, "slices"):
    slices = pipeline.build_slices(lm.tokenizer, p)
artifacts.write(out, "slices.json", {k: s.to_dict() for k, s in slices.items()})
artifacts.write(out, "slices.npz", {k: s.tokens for k, s in slices.items()})
provenance.record(out, model=info, slices={k: s.sha256 for k, s in slices.items()}, seed=p.seed)
pd.DataFrame({k: s.to_dict() for k, s in slices.items()}).T

# %%
# NBVAL_CHECK_OUTPUT
for name, s in slices.items():
    print(f"{name:13s} {s.source:8s} shape={tuple(s.tokens.shape)} bos={s.bos_prefixed} sha256={s.sha256[:16]}")
print(f"model {lm.name}: {info['model_type']}, {arch.n_layers} layers, d_ff={arch.d_ff}, gated={arch.gated}")

# %% [markdown]
# ## A decoded sample
# The first lattice window of Dataset A, as the model sees it (document separators included).

# %%
print(lm.tokenizer.decode(slices["a_lattice"].tokens[0]))

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown

from avalanche_nb import results

Markdown(results.what_this_shows(run_dir, out, "00_data_and_model"))
