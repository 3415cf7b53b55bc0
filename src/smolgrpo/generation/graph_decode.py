"""Decoding with a static KV cache, each token step replayed as one CUDA graph.

On a GPU our eager decode loop is launch-bound: a step of SmolLM2-135M makes about 6,200 PyTorch
operator calls whatever the batch, so an H200 spent 55-80 ms a token step on 128 rows, mostly
waiting on Python (README, the GPU chain). A CUDA graph records the kernels of one step once
and replays them with a single launch. That needs every tensor of the step at a fixed address
and shape, so this path departs from `rollout.decode` in three ways:
- the KV cache is a buffer of prompt + max_new_tokens positions per layer, written in place at
  a position held in a device tensor (`index_copy_`), and attention reads all of it;
- the attention mask is a (N, 1, 1, L) bool buffer whose next column is switched on each step
  (a 4-D mask reaches attention as it is, in transformers 5);
- finished rows stay in the batch (fed pad tokens, their output ignored) instead of being
  dropped, so every step has the same shape.
Masked positions hold zeros and get no attention weight, so a step attends to the same values
as the eager loop: greedy tokens agree with it up to floating-point ties (tests/test_graph_decode.py
checks the path on CPU, where it runs without the graph).

The first step runs eagerly (it also warms up kernels and the autocast weight casts); the graph
is captured at the second and replayed from then on, under a nested autocast with its cache off
so that the weight casts are recorded in the graph rather than baked in as cached tensors. A
capture that fails switches graphs off for the process (a warning) and the decode goes on
eagerly. `SMOLGRPO_CUDA_GRAPHS=0` switches them off from outside.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from smolgrpo.generation.kv_cache import DynamicLayer, plain_dynamic_layers
from smolgrpo.runs.interrupts import StopRequested

_disabled_reason: str | None = None  # set by a capture that failed: eager from then on


def graphs_enabled() -> bool:
    """False when SMOLGRPO_CUDA_GRAPHS=0 or a capture has failed in this process."""
    return os.environ.get("SMOLGRPO_CUDA_GRAPHS", "1") != "0" and _disabled_reason is None


def supports_static(model) -> bool:
    """Only sdpa attention takes a bool 4-D mask as it is (eager attention adds the mask)."""
    return getattr(model.config, "_attn_implementation", None) == "sdpa"


class StaticLayer(DynamicLayer):
    """A DynamicLayer whose keys/values are fixed buffers of every position the decode will
    fill; `update` writes the new position (a shared device tensor) in place."""

    def update(self, key_states, value_states, *args, **kwargs):
        # Under autocast the prefill and a step can hand over different dtypes (transformers
        # 5.17: float32 from the prefill, bf16 from a step); index_copy_ needs the buffer's.
        self.key_buffer.index_copy_(2, self.write_position, key_states.to(self.key_buffer.dtype))
        self.value_buffer.index_copy_(
            2, self.write_position, value_states.to(self.value_buffer.dtype)
        )
        return self.key_buffer, self.value_buffer


def static_cache(cache, extra_tokens: int) -> torch.Tensor | None:
    """Turn a prefilled DynamicCache into fixed buffers with room for `extra_tokens` positions;
    returns the (1,) device tensor of the position the next forward writes, or None (cache
    left untouched) when the cache is not made of plain full-attention DynamicLayers."""
    layers = plain_dynamic_layers(cache)
    if layers is None:
        return None
    length = layers[0].keys.shape[-2]
    write_position = torch.full((1,), length, dtype=torch.long, device=layers[0].keys.device)
    for layer in layers:
        for name in ("keys", "values"):
            filled = getattr(layer, name)
            batch, heads, _, width = filled.shape
            # zeros, not empty: a masked position still enters the attention product with
            # weight 0, and 0 * NaN garbage would be NaN
            buffer = filled.new_zeros((batch, heads, length + extra_tokens, width))
            buffer[:, :, :length] = filled
            setattr(layer, name[:-1] + "_buffer", buffer)
            setattr(layer, name, buffer)
        layer.__class__ = StaticLayer
        layer.write_position = write_position
    return write_position


class StepForward:
    """One decode forward on fixed input buffers: eager at the first call, a CUDA graph
    captured at the second and replayed after (`capture` False: always eager)."""

    def __init__(self, model, inputs: dict, capture: bool):
        self.model, self.inputs, self.capture = model, inputs, capture
        self.calls, self.graph, self.logits = 0, None, None

    def _forward(self) -> torch.Tensor:
        return self.model(**self.inputs).logits[:, -1, :]  # (N, V)

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        if self.graph is None and self.capture and self.calls >= 2:
            self._capture()  # on failure: no graph, and capture is off from now on
        if self.graph is not None:
            self.graph.replay()
            return self.logits
        return self._forward()

    def _capture(self) -> None:
        global _disabled_reason
        device_type = "cuda"
        try:
            autocast = torch.is_autocast_enabled(device_type)
            dtype = torch.get_autocast_dtype(device_type) if autocast else None
            graph = torch.cuda.CUDAGraph()
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                with torch.autocast(
                    device_type, dtype=dtype, enabled=autocast, cache_enabled=False
                ):
                    self.logits = self._forward()
        except Exception as error:  # any failure: eager from now on, the decode goes on
            _disabled_reason = f"{type(error).__name__}: {error}"
            self.capture, self.logits = False, None
            warnings.warn(
                f"CUDA graph capture failed, decoding eagerly from now on ({_disabled_reason})",
                stacklevel=2,
            )
            torch.cuda.synchronize()
            return
        self.graph = graph


@torch.no_grad()
def static_decode(
    model,
    write_position: torch.Tensor,
    logits: torch.Tensor,
    prompt_mask: torch.Tensor,
    next_position: torch.Tensor,
    eos: torch.Tensor,
    *,
    cache_kwargs: dict,
    pad_token_id: int,
    max_new_tokens: int,
    sample: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    ignore_eos: bool = False,
    should_stop: Callable[[], bool] | None = None,
    capture: bool = True,
    record: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """The decode loop on a cache from `static_cache`; returns (N, C) ids, finished rows padded
    after their EOS. `logits` (N, V) are the prefill's last ones; `prompt_mask` (N, P) and
    `next_position` (N,) are per row; `eos` holds the EOS ids; `sample` maps (N, V) logits to
    (N,) tokens and their (N,) log-probs (or None); `record(step, log_probs)` keeps the latter
    (sampler_log_probs.py; finished rows included, the caller masks them)."""
    rows, prompt_length = prompt_mask.shape
    device = prompt_mask.device
    mask = torch.zeros(rows, 1, 1, prompt_length + max_new_tokens, dtype=torch.bool, device=device)
    mask[:, 0, 0, :prompt_length] = prompt_mask.bool()
    token_input = torch.zeros(rows, 1, dtype=torch.long, device=device)  # (N, 1)
    position_input = next_position.unsqueeze(-1).clone()  # (N, 1)
    inputs = dict(
        input_ids=token_input, attention_mask=mask, position_ids=position_input, **cache_kwargs
    )
    forward = StepForward(model, inputs, capture=capture)
    completion = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)  # (N,)
    generated = 0
    for step in range(max_new_tokens):
        if should_stop is not None and should_stop():
            raise StopRequested("stopped while decoding")
        if ignore_eos and eos.numel():
            logits = logits.clone()
            logits[:, eos] = float("-inf")
        tokens, log_probs = sample(logits)  # (N,), (N,) or None
        tokens = tokens.masked_fill(finished, pad_token_id)  # (N,)
        if record is not None:
            record(step, log_probs)
        completion[:, step] = tokens
        generated = step + 1
        if not ignore_eos:
            finished |= torch.isin(tokens, eos)
            # one sync a step: cheap next to a step, and it ends the loop when all are done
            if bool(finished.all()):
                break
        if step == max_new_tokens - 1:
            break
        token_input.copy_(tokens.unsqueeze(-1))
        if step:
            position_input.add_(1)
        write_position.fill_(prompt_length + step)
        mask[:, 0, 0, prompt_length + step] = True
        logits = forward()  # (N, V); a graph's output buffer: read before the next step
    return completion[:, :generated]  # (N, C)
