"""A KV cache that decoding writes in place, instead of concatenating.

transformers' DynamicCache grows each layer's keys and values with `torch.cat` at every decode
step, so a step copies the whole cache: on CPU that was 27-44% of a decode step of SmolLM2-135M
(32 rows, ~280 tokens; benchmarks/kv_cache_decode.py, 2026-11-28). `preallocate` gives each layer of a DynamicCache a
buffer with room for the tokens still to come; `update` then writes the new position into it
and hands attention a view of the filled part. The values attended are the same, so the
samples are the same (tests/test_kv_cache.py). Dropping finished rows copies only the filled
part, once per drop rather than once per step.

Only plain DynamicLayer caches are converted (full attention, transformers >= 5); anything else
(sliding windows, quantized or older caches) is left as it is and decodes by concatenation.
"""

from __future__ import annotations

import torch

try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # transformers 4: preallocate() returns False before using the class
    DynamicLayer = object


def plain_dynamic_layers(cache) -> list | None:
    """The layers of a prefilled DynamicCache made of plain (full-attention) DynamicLayers with
    4-D keys, or None for anything else (sliding windows, quantized or older caches)."""
    if DynamicLayer is object:  # transformers 4: no per-layer cache objects
        return None
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    if any(not layer.is_initialized or layer.keys.dim() != 4 for layer in layers):
        return None
    return layers


def preallocate(cache, extra_tokens: int) -> bool:
    """Give every layer of `cache` room for `extra_tokens` more positions; False (cache left
    untouched) when it is not a DynamicCache made of plain DynamicLayers."""
    layers = plain_dynamic_layers(cache)
    if layers is None:
        return False
    for layer in layers:
        layer.__class__ = PreallocatedLayer
        layer.reserve(extra_tokens)
    return True


class PreallocatedLayer(DynamicLayer):
    """A DynamicLayer whose keys/values are views of the filled part of a larger buffer."""

    def reserve(self, extra_tokens: int) -> None:
        self.length = self.keys.shape[-2]
        self._refill(self.keys, self.values, self.length + extra_tokens)

    def _refill(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        """New buffers of `capacity` positions holding `keys`/`values` as the filled part."""
        self.key_buffer = self._buffer(keys, capacity)
        self.value_buffer = self._buffer(values, capacity)
        self._expose()

    @staticmethod
    def _buffer(filled: torch.Tensor, capacity: int) -> torch.Tensor:
        batch, heads, length, width = filled.shape
        buffer = filled.new_empty((batch, heads, capacity, width))
        buffer[:, :, :length] = filled
        return buffer

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        new = key_states.shape[-2]
        if self.length + new > self.key_buffer.shape[-2]:  # past the reserve: double the room
            self._refill(self.keys, self.values, 2 * (self.length + new))
        self.key_buffer[:, :, self.length : self.length + new] = key_states
        self.value_buffer[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._refill(self.keys[indices], self.values[indices], self.key_buffer.shape[-2])

    def batch_repeat_interleave(self, repeats: int) -> None:
        capacity = self.key_buffer.shape[-2]
        self._refill(
            self.keys.repeat_interleave(repeats, dim=0),
            self.values.repeat_interleave(repeats, dim=0),
            capacity,
        )

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last -n tokens (n < 0, transformers 5), or keep the first n (n > 0: an
        absolute length, transformers 4's meaning): keys, values and the length together, so a
        later update writes right after what is kept. n = 0 keeps everything."""
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        if tokens_to_remove < 0:
            self.length = max(0, self.length + tokens_to_remove)
        else:
            self.length = min(self.length, tokens_to_remove)
        self._expose()
