"""Named hook points on decoder layers: one way to observe or edit them, always removed.

Hook points (:data:`POINTS`, per decoder layer ``l``):

* ``resid.in``   — the decoder layer's input hidden state [B, T, d_model]; layer 0's is the
  embeddings as the model scales them (Gemma multiplies by sqrt(d_model)).
* ``resid.out``  — the decoder layer's output hidden state [B, T, d_model].
* ``mlp.tap``    — the MLP's intermediate tensor ``u`` [B, T, d_ff]: the input of the MLP's output
  projection. Gated MLPs (Llama, Qwen2, Gemma-3): ``act(gate_proj(x)) * up_proj(x)``; non-gated
  (GPT-NeoX, GPT-2): the activation output.
* ``mlp.out``    — the MLP's contribution right before the residual add (after Gemma's
  ``post_feedforward_layernorm``) [B, T, d_model]; :func:`gain` multiplies this.
* ``attn.out``   — the attention block's contribution right before the residual add [B, T, d_model].
* ``attn.norm`` / ``mlp.norm`` — the outputs of the norms in front of the attention block and of the
  MLP (``input_layernorm``; Llama's ``post_attention_layernorm``, Gemma's ``pre_feedforward_layernorm``).
* ``attn.weights`` — the attention probabilities [B, H, T, T] (observe only); :func:`attach` runs
  the model with eager attention while such a hook is attached, since only eager attention returns them.

A :class:`Hook` calls ``fn(layer, x)`` with the tensor ``x`` at its point: returning ``None``
observes, returning a tensor replaces ``x`` (an edit). :func:`attach` registers hooks for the
duration of a ``with`` block and removes every one on exit, also when the forward pass raises.
``resid.*`` points need only the decoder layers, so they work on any causal LM; the others need a
supported family (:data:`FAMILIES`).

On a model dispatched by a device map (accelerate) the layers may run on different devices, and
``x`` is on the device its module runs on (an input point: where the module before it ran, since
accelerate moves inputs inside the module's forward). A hook builds its tensors on ``x.device``, never
on one global device.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
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


#: hook point -> (the :class:`Architecture` field listing its modules, what of their forward it is)
_SITES: dict[str, tuple[str, str]] = {
    "resid.in": ("layers", "input"), "resid.out": ("layers", "output"), "mlp.tap": ("tap", "input"),
    "mlp.out": ("mlp_out", "output"), "attn.out": ("attn_out", "output"), "attn.norm": ("attn_norm", "output"),
    "mlp.norm": ("mlp_norm", "output"), "attn.weights": ("attn", "weights"),
}
POINTS: tuple[str, ...] = tuple(_SITES)

HookFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]


@dataclass(frozen=True)
class Hook:
    """``fn(layer, x)`` at hook point ``point`` of each layer in ``layers`` (``None``: every layer).

    ``fn`` returns ``None`` to observe ``x`` or a tensor to replace it. ``fresh_only`` hooks act only
    in forward passes without a key/value cache (or with an empty one): under multiple-choice scoring
    the cached continuation pass then never re-edits its context, while the cache it reads was
    computed under the edit.
    """

    point: str
    fn: HookFn
    layers: Sequence[int] | None = None
    fresh_only: bool = False

    def __post_init__(self):
        if self.point not in _SITES:
            raise ValueError(f"unknown hook point {self.point!r}; points: {', '.join(POINTS)}")
        if self.layers is not None:  # each layer once: a repeated layer would run fn twice per pass
            object.__setattr__(self, "layers", tuple(sorted({int(l) for l in self.layers})))


def _modules(model: nn.Module, point: str) -> list[nn.Module]:
    field, _ = _SITES[point]
    return decoder_layers(model) if field == "layers" else getattr(architecture(model), field)


def _input_hook(fn: HookFn, layer: int, active: Callable[[], bool]):
    """Forward pre-hook (with kwargs): the module's first input, positional or ``hidden_states``."""
    def hook(_module, args, kwargs):
        if not active():
            return None
        x = fn(layer, args[0] if args else kwargs["hidden_states"])
        if x is None:
            return None
        return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})
    return hook


def _output_hook(fn: HookFn, layer: int, active: Callable[[], bool]):
    """Forward hook: the module's output, or its first element (attention modules return tuples)."""
    def hook(_module, _args, output):
        if not active():
            return None
        x = fn(layer, output[0] if isinstance(output, tuple) else output)
        if x is None:
            return None
        return (x, *output[1:]) if isinstance(output, tuple) else x
    return hook


def _weights_hook(fn: HookFn, layer: int, active: Callable[[], bool]):
    """Forward hook on an attention module: its weights ``output[1]``, observed only."""
    def hook(_module, _args, output):
        if not active():
            return None
        w = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if w is None:
            raise UnsupportedArchitectureError(f"layer {layer}'s attention module returned no weights")
        if fn(layer, w) is not None:
            raise ValueError("attn.weights is observe-only: its hook must return None")
        return None
    return hook


def _register(model: nn.Module, hook: Hook, active: Callable[[], bool]) -> list:
    """Register ``hook`` on every chosen layer; returns the handles."""
    modules = _modules(model, hook.point)
    chosen = range(len(modules)) if hook.layers is None else hook.layers
    bad = [l for l in chosen if not 0 <= l < len(modules)]
    if bad:
        raise ValueError(f"{hook.point}: layers {bad} out of range for a model with {len(modules)} layers")
    kind = _SITES[hook.point][1]
    if kind == "input":
        return [modules[l].register_forward_pre_hook(_input_hook(hook.fn, l, active), with_kwargs=True)
                for l in chosen]
    make = _output_hook if kind == "output" else _weights_hook
    return [modules[l].register_forward_hook(make(hook.fn, l, active)) for l in chosen]


def _fresh_pass_tracker(model: nn.Module, state: dict):
    """Pre-hook on the decoder stack: ``state["fresh"]`` is True while a pass without a cache runs."""
    def hook(_module, _args, kwargs):
        past = kwargs.get("past_key_values")
        state["fresh"] = past is None or past.get_seq_length() == 0
    return model.base_model.register_forward_pre_hook(hook, with_kwargs=True)


@contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with eager attention (which returns its weights) inside the block, then restore."""
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


@contextmanager
def attach(model: nn.Module, *hooks: Hook) -> Iterator[None]:
    """Register ``hooks`` on ``model`` for the ``with`` block; every one is removed on exit, also when
    the forward pass raises.

    Hooks at one point run in registration order: those of an enclosing ``attach`` first, then these
    in the order given, so an observer after an edit sees the edited tensor. With an ``attn.weights``
    hook the block runs with eager attention (restored on exit).
    """
    state = {"fresh": True}
    weights = any(h.point == "attn.weights" for h in hooks)
    handles: list = []
    with _eager_attention(model) if weights else nullcontext():
        try:
            if any(h.fresh_only for h in hooks):
                handles.append(_fresh_pass_tracker(model, state))
            for h in hooks:
                handles += _register(model, h, (lambda: state["fresh"]) if h.fresh_only else (lambda: True))
            yield
        finally:
            for handle in handles:
                handle.remove()


def gain(model: nn.Module, g: float, where: str = "mlp", layers: Sequence[int] | None = None
         ) -> AbstractContextManager[None]:
    """Multiply each chosen layer's ``mlp.out`` (``where="mlp"``) or ``attn.out`` (``"attn"``) by ``g``.

    ``g == 1`` registers nothing, so the forward pass is bit-identical to the unhooked model.
    ``layers`` restricts the gain to a band of layers (ablations); ``None`` means all.
    """
    if where not in ("mlp", "attn"):
        raise ValueError(f"gain target must be 'mlp' or 'attn', got {where!r}")
    g = float(g)
    return attach(model, *([] if g == 1.0 else [Hook(f"{where}.out", lambda _layer, x: x * g, layers)]))


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
