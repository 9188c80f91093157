"""The architecture of a small Llama-style model trained from scratch, as ``"LAYERSxWIDTHxHEADSxMLP_RATIO"``.

Apart from :mod:`training` (which imports torch) so that checking params never imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ARCH = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class ModelSpec:
    """A small Llama-style decoder: ``layers`` blocks of width ``width``, ``heads`` heads, MLP ``mlp_ratio`` × width."""

    layers: int
    width: int
    heads: int
    mlp_ratio: float

    @property
    def name(self) -> str:
        return f"{self.layers}x{self.width}x{self.heads}x{self.mlp_ratio:g}"

    def config(self, vocab_size: int, max_len: int, bos: int | None, eos: int | None):
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=vocab_size, hidden_size=self.width, intermediate_size=int(self.mlp_ratio * self.width),
                           num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.heads,
                           max_position_embeddings=max_len, tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos)

    def n_params(self, vocab_size: int) -> int:
        d, f = self.width, int(self.mlp_ratio * self.width)
        return vocab_size * d + self.layers * (4 * d * d + 3 * d * f + 2 * d) + d


def parse_spec(spec: str) -> ModelSpec:
    """``"4x256x4x4"`` -> ModelSpec(layers=4, width=256, heads=4, mlp_ratio=4)."""
    m = _ARCH.match(spec.strip())
    if not m:
        raise ValueError(f"architecture {spec!r} must read LAYERSxWIDTHxHEADSxMLP_RATIO, e.g. '4x256x4x4'")
    a = ModelSpec(int(m[1]), int(m[2]), int(m[3]), float(m[4]))
    if min(a.layers, a.width, a.heads) < 1 or a.mlp_ratio <= 0 or a.width % a.heads or (a.width // a.heads) % 2:
        raise ValueError(f"architecture {spec!r}: width must split into heads of even size, all sizes positive")
    return a


