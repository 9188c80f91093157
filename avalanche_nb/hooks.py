"""Hook points on decoder layers, with plain stable names, always removed.

Hook points (per decoder layer ``l``):

* ``mlp.tap``  — the MLP's intermediate tensor ``u`` [B, T, d_ff]: the input of the MLP's output
  projection. Gated MLPs (Llama, Qwen2, Gemma-3): ``act(gate_proj(x)) * up_proj(x)``; non-gated
  (GPT-NeoX, GPT-2): the activation output.
* ``mlp.out``  — the MLP's contribution right before the residual add (after Gemma's
  ``post_feedforward_layernorm``); the gain multiplies this.
* ``attn.out`` — the attention block's contribution right before the residual add.
* ``resid.out`` — the decoder layer's output hidden state [B, T, d_model].
* ``attn.norm`` / ``mlp.norm`` — the norms in front of the attention block and of the MLP
  (``input_layernorm``; Llama's ``post_attention_layernorm``, Gemma's ``pre_feedforward_layernorm``).
* ``attn`` — the attention module itself (its eager weights give the attention-sink mass).

Every context manager removes its hooks on exit, also when the forward pass raises.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn


class UnsupportedArchitectureError(ValueError):
    """The model's decoder layers or MLP cannot be located."""


class NonFiniteActivationError(FloatingPointError):
    """A tensor the model produced holds NaN or inf: the model, its weights or the gain broke it."""


def check_finite(x: torch.Tensor, where: str) -> None:
    """Raise :class:`NonFiniteActivationError` naming ``where`` if ``x`` holds NaN or inf.

    One fused reduction (a NaN or inf anywhere makes the sum non-finite; ~15x cheaper than
    ``isfinite().all()``), accumulated in float32 so a float16 tensor of finite values cannot
    overflow the sum into a false alarm.
    """
    if not torch.isfinite(x.sum(dtype=torch.float32)):
        raise NonFiniteActivationError(f"non-finite values (NaN/inf) in {where}")


@dataclass(frozen=True)
class _Family:
    tap: str  # module whose forward *input* is the tapped tensor
    mlp_out: str  # module whose *output* is the MLP contribution to the residual stream
    attn_out: str  # module whose *output* (or output[0]) is the attention contribution
    gated: bool
    attn_norm: str = "input_layernorm"  # norm whose output is the attention block's input
    mlp_norm: str = "post_attention_layernorm"  # norm whose output is the MLP's input
    attn: str = "self_attn"  # attention module, returns (output, weights)


_LLAMA = _Family(tap="mlp.down_proj", mlp_out="mlp", attn_out="self_attn", gated=True)
# Gemma-2/3 wrap both blocks in a post-norm; scaling the raw MLP output would be normalised away.
_GEMMA = _Family(tap="mlp.down_proj", mlp_out="post_feedforward_layernorm",
                 attn_out="post_attention_layernorm", gated=True, mlp_norm="pre_feedforward_layernorm")

FAMILIES: dict[str, _Family] = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "olmo": _LLAMA,
    "gemma2": _GEMMA, "gemma3": _GEMMA, "gemma3_text": _GEMMA,
    "gpt_neox": _Family(tap="mlp.dense_4h_to_h", mlp_out="mlp", attn_out="attention", gated=False,
                        attn="attention"),
    "gpt2": _Family(tap="mlp.c_proj", mlp_out="mlp", attn_out="attn", gated=False, attn_norm="ln_1",
                    mlp_norm="ln_2", attn="attn"),
}


@dataclass
class Architecture:
    """Where the hook points of one model live."""

    model_type: str
    layers: list[nn.Module]
    tap: list[nn.Module]
    mlp_out: list[nn.Module]
    attn_out: list[nn.Module]
    gated: bool
    d_ff: int
    attn_norm: list[nn.Module]
    mlp_norm: list[nn.Module]
    attn: list[nn.Module]

    @property
    def n_layers(self) -> int:
        return len(self.layers)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a causal LM: the ModuleList with ``num_hidden_layers`` blocks."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and n:
            return list(module)
    raise UnsupportedArchitectureError(
        f"cannot find the decoder layers of {type(model).__name__} "
        f"(model_type={getattr(model.config, 'model_type', '?')!r}): no ModuleList of "
        f"num_hidden_layers={n} blocks")


def architecture(model: nn.Module) -> Architecture:
    """Locate the hook points of ``model`` or fail with the architecture's name."""
    model_type = getattr(model.config, "model_type", "?")
    family = FAMILIES.get(model_type)
    if family is None:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {type(model).__name__} (model_type={model_type!r}): no MLP tap "
            f"is defined for it. Supported model types: {', '.join(sorted(FAMILIES))}")
    if getattr(model.config, "pretraining_tp", 1) != 1:
        # the tensor-parallel branch calls F.linear directly and would bypass the hooks
        raise UnsupportedArchitectureError(f"{model_type} with pretraining_tp != 1 bypasses module hooks")
    layers = decoder_layers(model)
    try:
        tap = [layer.get_submodule(family.tap) for layer in layers]
        mlp_out = [layer.get_submodule(family.mlp_out) for layer in layers]
        attn_out = [layer.get_submodule(family.attn_out) for layer in layers]
        norms = [[layer.get_submodule(name) for layer in layers] for name in (family.attn_norm, family.mlp_norm)]
        attn = [layer.get_submodule(family.attn) for layer in layers]
    except AttributeError as err:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} (model_type={model_type!r}) lacks an expected submodule: {err}") from err
    d_ff = tap[0].in_features if hasattr(tap[0], "in_features") else tap[0].weight.shape[0]  # GPT-2 Conv1D
    return Architecture(model_type, layers, tap, mlp_out, attn_out, family.gated, int(d_ff), *norms, attn)


@contextmanager
def _hooks(handles_factory: Callable[[], list]) -> Iterator[None]:
    handles: list = []
    try:
        handles = handles_factory()
        yield
    finally:
        for h in handles:
            h.remove()


TapFn = Callable[[int, torch.Tensor], None]


@contextmanager
def mlp_tap(model: nn.Module, fn: TapFn, layers: Sequence[int] | None = None) -> Iterator[Architecture]:
    """Call ``fn(layer, u)`` with the MLP intermediate ``u`` [B, T, d_ff] of each decoder layer.

    ``fn`` must reduce ``u`` on the fly and return nothing; the forward pass is unchanged.
    """
    arch = architecture(model)
    chosen = range(arch.n_layers) if layers is None else layers

    def make():
        def pre_hook(layer: int):
            def hook(_module, args):
                fn(layer, args[0])
            return hook
        return [arch.tap[l].register_forward_pre_hook(pre_hook(l)) for l in chosen]

    with _hooks(make):
        yield arch


def _scale_output(g: float):
    def hook(_module, _args, output):
        if isinstance(output, tuple):  # attention modules return (out, weights, ...)
            return (output[0] * g,) + tuple(output[1:])
        return output * g
    return hook


@contextmanager
def gain(model: nn.Module, g: float, where: str = "mlp", layers: Sequence[int] | None = None
         ) -> Iterator[Architecture]:
    """Multiply each chosen layer's ``mlp.out`` (or ``attn.out``) contribution by ``g``.

    ``g == 1`` registers nothing, so the forward pass is bit-identical to the unhooked model.
    ``layers`` restricts the gain to a band of layers (ablations); ``None`` means all.
    """
    if where not in ("mlp", "attn"):
        raise ValueError(f"gain target must be 'mlp' or 'attn', got {where!r}")
    arch = architecture(model)
    modules = arch.mlp_out if where == "mlp" else arch.attn_out
    chosen = range(arch.n_layers) if layers is None else layers

    def make():
        if float(g) == 1.0:
            return []
        return [modules[l].register_forward_hook(_scale_output(float(g))) for l in chosen]

    with _hooks(make):
        yield arch


@contextmanager
def residual_tap(model: nn.Module, fn: TapFn) -> Iterator[Architecture]:
    """Call ``fn(layer, h)`` with each decoder layer's output hidden state ``h`` [B, T, d_model]."""
    arch = architecture(model)

    def make():
        def post_hook(layer: int):
            def hook(_module, _args, output):
                fn(layer, output[0] if isinstance(output, tuple) else output)
            return hook
        return [m.register_forward_hook(post_hook(l)) for l, m in enumerate(arch.layers)]

    with _hooks(make):
        yield arch


def hook_count(model: nn.Module) -> int:
    """Number of forward (pre-)hooks registered anywhere in ``model`` (tests: nothing leaks)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@torch.no_grad()
def forward_hidden(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Run the decoder stack without the LM head; returns the final hidden state [B, T, d_model].

    Activation-only passes skip the LM head: on Gemma-3 it is a 640 × 262k matmul per token.
    """
    out = model.base_model(input_ids=input_ids, use_cache=False)
    return out.last_hidden_state
