"""A short LoRA fine-tune (peft) of a copy of a causal LM, with an edit optionally attached while it trains.

Seed 002 reports that reducing the MA token's rigidity helps "in both training-free and fine-tuning
settings": :func:`lora_finetune` trains rank-``r`` adapters on the attention projections of a deep copy
of the model (the model passed in is never modified), with e.g. :func:`interventions.rigidity_reduction`
in place during every training pass, and returns the copy with the adapters merged into its weights, so
every scorer and hook of this package reads it as an ordinary model.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch
from torch import nn

from .data import default_add_bos
from .models import input_device

#: the LoRA targets: attention projections (Llama, Qwen2/3, Gemma-3 and Mistral name them so), the part
#: of the block that reads the MA token's normed state
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def memory_needed(model: nn.Module, *, batch_size: int, window: int, rank: int) -> int:
    """Rough bytes of one fine-tune: the copy's weights, the adapters with their gradients and AdamW
    state (float32), and one step's activations (the block's intermediates kept for backward, attention
    scores and the logits with their gradient)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    L, d, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    d_ff, heads = getattr(cfg, "intermediate_size", 4 * d), cfg.num_attention_heads
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    adapters = L * len(LORA_TARGETS) * rank * 2 * max(d, heads * getattr(cfg, "head_dim", d // heads)) * 16
    acts = 4 * batch_size * window * (L * (16 * d + 3 * d_ff + 2 * heads * window) + 3 * V)
    return int(weights + adapters + acts)


def check_memory(model: nn.Module, device: str, *, batch_size: int, window: int, rank: int) -> None:
    """Stop before a fine-tune that would not fit ``device``'s free memory, naming the size it needs."""
    from .training import free_memory

    need, free = memory_needed(model, batch_size=batch_size, window=window, rank=rank), free_memory(device)
    if need > 0.8 * free:
        raise MemoryError(f"the LoRA fine-tune needs about {need / 2**30:.1f} GiB but {device} has "
                          f"{free / 2**30:.1f} GiB free: lower `finetune_batch_size` or `finetune_window`")


def text_windows(tokenizer, texts: Sequence[str], n: int, window: int, *, seed: int) -> np.ndarray:
    """int64 [n, window]: the last ``window`` tokens (BOS first where the model expects one) of ``n``
    of ``texts`` in a seeded order, skipping texts shorter than a window; cycles when fewer remain."""
    bos = [int(tokenizer.bos_token_id)] if default_add_bos(tokenizer) else []
    rows = []
    for i in np.random.default_rng(seed).permutation(len(texts)):
        ids = list(tokenizer(texts[i], add_special_tokens=False)["input_ids"])
        if len(ids) + len(bos) >= window:
            rows.append(bos + ids[len(ids) - (window - len(bos)):])
        if len(rows) == n:
            break
    if not rows:
        raise ValueError(f"no fine-tuning text reaches a window of {window} tokens")
    return np.asarray([rows[i % len(rows)] for i in range(n)], np.int64)


def lora_finetune(model: nn.Module, windows: np.ndarray, *, steps: int, batch_size: int, lr: float, rank: int,
                  seed: int, progress: bool, edit: Callable[[nn.Module], ContextManager] | None = None
                  ) -> tuple[nn.Module, np.ndarray]:
    """Fine-tune a copy of ``model`` on ``windows`` int [N, T] (next-token loss on every position).

    LoRA rank ``rank`` (alpha 2·rank, no dropout) on :data:`LORA_TARGETS`; AdamW at a constant ``lr``
    without weight decay; ``steps`` steps of ``batch_size`` windows, an epoch being a seeded permutation.
    ``edit(model)``: a context manager attached to the copy for the whole training (None: none).
    Returns (the copy with the adapters merged, in eval mode; the training loss per step float [steps]).
    """
    from peft import LoraConfig, get_peft_model

    if steps < 1 or batch_size < 1 or not lr > 0 or rank < 1:
        raise ValueError(f"steps, batch_size, rank must be >= 1 and lr > 0, got {steps}, {batch_size}, {rank}, {lr}")
    windows = np.asarray(windows)
    if windows.ndim != 2 or len(windows) < 1:
        raise ValueError(f"windows must be int [N, T] with N >= 1, got shape {windows.shape}")
    if any(w.device.type == "meta" for w in model.parameters()):
        raise ValueError("a LoRA fine-tune needs every weight resident on a device: this model's device map "
                         "offloads some to CPU or disk (give it more GPU memory, or no device map)")
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(LORA_TARGETS), bias="none")
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question: noise in every notebook
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        tuned = get_peft_model(copy.deepcopy(model), config)
    inner = tuned.get_base_model()  # the copy with adapters injected: the hooks find its layers as usual
    opt = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses = np.empty(steps)
    device = input_device(model)
    steps_iter = range(steps)
    if progress:
        from .progress import track
        steps_iter = track(steps_iter, "LoRA fine-tune", unit="step")
    tuned.train()
    with edit(inner) if edit is not None else nullcontext(), torch.enable_grad():
        for step in steps_iter:
            while len(order) < batch_size:
                order += rng.permutation(len(windows)).tolist()
            idx, order = order[:batch_size], order[batch_size:]
            ids = torch.as_tensor(windows[idx], device=device)
            loss = inner(input_ids=ids, labels=ids, use_cache=False).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the fine-tune's loss is {float(loss)} at step {step}: lower `finetune_lr`")
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[step] = float(loss.detach())
    merged = tuned.merge_and_unload()
    merged.eval()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged, losses
