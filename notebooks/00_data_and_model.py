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
#   consecutive windows of one seeded stream of documents.
# * **Dataset B** — a different source, held out for transfer checks.
#
# Artifacts: `slices.json` (slice definitions and sha256 of their token ids), `model.json`.

# %% tags=["parameters"]
run_dir = ""  # run folder, injected by `avalanche-nb run`
phase = "00_data_and_model"  # phase name, injected by `avalanche-nb run`
model = "smollm2-135m-instruct"  # registry name, local path (folder or .gguf) or HF id in the local cache
dtype = "float32"  # weights and compute dtype
device = "cpu"  # torch device
torch_threads = 2  # CPU threads for torch
seed = 0  # seeds slice sampling and every random draw
dataset_a = "boolq"  # source of Dataset A
dataset_b = "sciq"  # source of Dataset B
window = 128  # tokens per window
n_sequences = 16  # Dataset A windows in the lattice slice
n_calibration = 16  # Dataset A windows for mu/sigma
n_sequences_b = 16  # Dataset B windows

# %%
import pandas as pd

from avalanche_nb import hooks, provenance, runtime
from avalanche_nb.data import build_slice
from avalanche_nb.models import load_model

runtime.configure(seed, torch_threads)
out = provenance.phase_output(run_dir, phase)

# %% [markdown]
# ## Model

# %%
lm = load_model(model, dtype=dtype, device=device, seed=seed)
arch = hooks.architecture(lm.model)
info = lm.describe() | {"d_ff": arch.d_ff, "gated_mlp": arch.gated,
                        "n_parameters": sum(p.numel() for p in lm.model.parameters())}
provenance.save_json(out / "model.json", info)
pd.Series(info, name="model").to_frame()

# %% [markdown]
# ## Slices

# %%
calib, lattice_slice = runtime.dataset_a_slices(lm.tokenizer, dataset_a, n_calibration, n_sequences, window, seed)
slice_b = build_slice(lm.tokenizer, dataset_b, n_sequences_b, window, seed=seed)
slices = {"a_calibration": calib, "a_lattice": lattice_slice, "b": slice_b}
provenance.save_json(out / "slices.json", {k: s.to_dict() for k, s in slices.items()})
provenance.record(out, model=info, slices={k: s.sha256 for k, s in slices.items()}, seed=seed)
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
print(lm.tokenizer.decode(lattice_slice.tokens[0]))
