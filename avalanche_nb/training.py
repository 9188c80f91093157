"""Train small Llama-style causal LMs from scratch and record their massive-activation trajectories.

* :func:`parse_spec` reads ``"LxDxHxM"`` (layers × width × heads × MLP ratio).
* :func:`training_windows` cuts a fixed token stream from the embedded text (documents separated,
  BOS first) into windows; :func:`checkpoint_steps` is a Pythia-like schedule (0, powers of two,
  then every ``every`` steps).
* :func:`train` runs AdamW with linear warm-up (bf16 autocast on CUDA, float32 on CPU), seeded, and
  calls a recorder at every checkpoint; :func:`record` reduces the probe scan to seed 003's statistics
  (top-1/2/3 and median |h| per layer, ratios with mean, CV%, SEM% and a 95% t-interval over probes).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable

import numpy as np
import pandas as pd
import torch
from scipy import stats as st

from . import massive
from .arch_spec import ModelSpec, parse_spec  # noqa: F401 - the training API names them
from .progress import track

WEIGHT_DECAY = 0.1  # AdamW, as in the Pythia / seed 003 recipes
PROBE_BATCH = 16  # probe windows per recording pass (a fixed size, so recorded numbers never depend on it)


def checkpoint_steps(total: int, every: int) -> list[int]:
    """0, 1, 2, 4, … (powers of two below ``every``), then every ``every`` steps up to ``total``."""
    if total < 1 or every < 1:
        raise ValueError("total and every must be >= 1")
    steps = {0, total} | {2 ** i for i in range(int(math.log2(max(every, 1))) + 1) if 2 ** i < every and 2 ** i <= total}
    steps |= set(range(every, total + 1, every))
    return sorted(steps)


def memory_needed(arch: ModelSpec, vocab_size: int, batch: int, window: int) -> int:
    """Rough bytes for float32 weights, grads and AdamW state plus activations of one step."""
    weights = 4 * arch.n_params(vocab_size) * 4
    acts = 4 * batch * window * (arch.layers * (12 * arch.width + 3 * int(arch.mlp_ratio * arch.width)) + 2 * vocab_size)
    return int(weights + acts)


def free_memory(device: str) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the host's available physical pages."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_memory(archs: list[ModelSpec], vocab_size: int, batch: int, window: int, device: str) -> None:
    """Fail before training when the largest model would not fit the device's free memory."""
    need = max(memory_needed(a, vocab_size, batch, window) for a in archs)
    free = free_memory(device)
    if need > 0.8 * free:
        big = max(archs, key=lambda a: memory_needed(a, vocab_size, batch, window))
        raise MemoryError(f"training {big.name} needs about {need / 2**30:.1f} GiB but {device} has "
                          f"{free / 2**30:.1f} GiB free: shrink the grid, `train_batch_size` or `window`")


def training_windows(tokenizer, sources: list[str], n_tokens: int, window: int, *, seed: int) -> np.ndarray:
    """A token stream of up to ``n_tokens`` from every document of ``sources`` (seeded order; each document
    as ``[BOS] text [EOS]``), cut into windows int64 [N, window]."""
    from .data import load_documents

    docs = [d for s in sources for d in load_documents(s)]
    order = np.random.default_rng(seed).permutation(len(docs))
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for start in range(0, len(order), 256):  # tokenize in chunks, stop once the stream is long enough
        batch = [docs[i] for i in order[start:start + 256]]
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            stream += bos + list(ids) + eos
        if len(stream) >= n_tokens:
            break
    n = min(len(stream), n_tokens) // window
    if n < 1:
        raise ValueError(f"the sources {sources} give fewer than one window of {window} tokens")
    return np.asarray(stream[:n * window], np.int64).reshape(n, window)


def record(model, probe: np.ndarray, step: int, name: str, *, batch_size: int) -> pd.DataFrame:
    """Seed 003's per-layer statistics at one checkpoint (rows: model, layer, step, stat, mean, cv_pct,
    sem_pct, ci_lo, ci_hi, n), plus the modal position and dim of the top-1 (stats ``top1_pos``/``top1_dim``).

    Scans the probe windows int [N, T], ``batch_size`` per forward pass, keeping seed 003's top 3 entries.
    """
    s = massive.scan(model, probe, ma_top_k=3, batch_size=batch_size, progress=False)
    series = {"top1": s.top_abs[..., 0], "top2": s.top_abs[..., 1], "top3": s.top_abs[..., 2], "median": s.median,
              "ratio": s.top_abs[..., 0] / s.median, "ratio2": s.top_abs[..., 1] / s.median,
              "ratio3": s.top_abs[..., 2] / s.median}
    n = probe.shape[0]
    tcrit = st.t.ppf(0.975, n - 1) if n > 1 else np.nan
    rows = []
    for layer in range(s.n_layers):
        i = layer + 1
        for stat, v in series.items():
            x = v[i]
            mean, sd = float(x.mean()), float(x.std(ddof=1)) if n > 1 else float("nan")
            sem = sd / math.sqrt(n)
            rows.append({"model": name, "layer": layer, "step": step, "stat": stat, "mean": mean,
                         "cv_pct": 100 * sd / mean, "sem_pct": 100 * sem / mean, "ci_lo": mean - tcrit * sem,
                         "ci_hi": mean + tcrit * sem, "n": n})
        for stat, v in (("top1_pos", s.pos[i, :, 0]), ("top1_dim", s.dim[i, :, 0])):
            rows.append({"model": name, "layer": layer, "step": step, "stat": stat, "mean": float(massive.modal(v)), "cv_pct": np.nan,
                         "sem_pct": np.nan, "ci_lo": np.nan, "ci_hi": np.nan, "n": n})
    return pd.DataFrame(rows)


def train(spec: ModelSpec, windows: np.ndarray, checkpoints: list[int], tokenizer,
          on_checkpoint: Callable[[torch.nn.Module, int], None], p) -> list[float]:
    """Train a fresh model of ``spec`` on ``windows`` for ``train_steps`` AdamW steps (params ``p``:
    ``train_batch_size``, ``train_lr`` with ``train_warmup`` linear warm-up steps, ``seed``, ``device``,
    ``progress``); returns the loss per step.

    Batches are drawn with a seeded generator; ``on_checkpoint(model, step)`` runs in eval mode (no
    grad) at each step of ``checkpoints`` (0 = at initialisation).
    """
    steps, batch_size, lr, warmup = p["train_steps"], p["train_batch_size"], p["train_lr"], p["train_warmup"]
    seed, device = p["seed"], p["device"]
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = spec.config(len(tokenizer), windows.shape[1], tokenizer.bos_token_id, tokenizer.eos_token_id)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    gen = np.random.default_rng(seed)
    data = torch.as_tensor(windows)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    todo, losses = set(checkpoints), []

    def checkpoint(step: int) -> None:
        if step in todo:
            model.eval()
            with torch.no_grad():
                on_checkpoint(model, step)
            model.train()

    it = track(range(1, steps + 1), f"train {spec.name}", unit="step")
    model.train()
    checkpoint(0)
    for step in it:
        batch = data[gen.integers(0, len(data), batch_size)].to(device)
        with autocast:
            loss = model(input_ids=batch, labels=batch).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{spec.name}: non-finite loss at step {step}; lower `train_lr`")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        checkpoint(step)
    return losses
