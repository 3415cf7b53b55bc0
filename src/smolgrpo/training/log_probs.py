"""Per-token log-probs of sampled completions, with each group's prompt run once.

The G completions of a group share their prompt. `per_token_log_probs` (algo/log_probs.py) runs the
model over prompt + completion for every row, so the prompt is processed G times forward and
G times backward; with a few-shot prompt of ~350 tokens and completions of ~100 that is most
of the training compute. Here each distinct prompt goes through the model once (with
gradient), its KV cache is indexed out to the rows that share it, and only the completion
tokens are run per row, attending to that cache. The result and the gradient are the same as
the full forward (the cache is an ordinary differentiable tensor); see tests/test_rollout.py
(test_shared_prompt_log_probs_and_gradients_match_full_forward).

It needs the model's KV cache in training mode, so gradient checkpointing (which turns the cache
off) takes the full-forward path, as does a model whose cache cannot be indexed per row or fed
back (one warning line; the values are the same, only the compute is not shared).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smolgrpo.algo.log_probs import per_token_log_probs, selective_log_softmax, token_entropy
from smolgrpo.errors import warn
from smolgrpo.models.loading import (
    CACHE_SHARING_ERRORS,
    cache_sharing_failed,
    forward_after_prefix,
    mark_cache_sharing_failed,
)


def prompt_groups(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor]:
    """(index of each run of identical adjacent prompts' first row (U,), row -> run (B,))."""
    same = (prompt_ids[1:] == prompt_ids[:-1]).all(dim=1) & (
        prompt_mask[1:] == prompt_mask[:-1]
    ).all(dim=1)  # (B - 1,)
    starts = torch.cat([same.new_ones(1), ~same])  # (B,) first row of each run
    return starts.nonzero().squeeze(-1), starts.long().cumsum(dim=0) - 1  # (U,), (B,)


def completion_log_probs(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
    share_prompt: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """Log-probs (B, C) of `completion_ids` after left-padded `prompt_ids` (and entropies).

    Args:
        prompt_ids, prompt_mask: (B, P), left-padded; rows of one group are adjacent.
        completion_ids: (B, C). Tokens after a completion's EOS get log-probs too; the caller
            masks them out of the loss.
        share_prompt: run each distinct prompt once (False: the full forward per row).
    """
    if not share_prompt:
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (B, P + C)
        attention_mask = torch.cat([prompt_mask, torch.ones_like(completion_ids)], dim=1)
        return per_token_log_probs(
            model,
            input_ids,
            attention_mask,
            completion_ids.shape[1],
            temperature=temperature,
            return_entropy=return_entropy,
        )
    if not cache_sharing_failed(model):
        try:
            return _shared_prompt_log_probs(
                model, prompt_ids, prompt_mask, completion_ids, temperature, return_entropy
            )
        except CACHE_SHARING_ERRORS as error:
            # A model whose cache cannot be indexed or fed back: the full forward per row gives
            # the same values, only slower; said once per model.
            warn(
                f"{type(model).__name__}: shared-prompt log-probs unavailable "
                f"({type(error).__name__}); using the full forward"
            )
            mark_cache_sharing_failed(model)
    return completion_log_probs(
        model,
        prompt_ids,
        prompt_mask,
        completion_ids,
        temperature=temperature,
        return_entropy=return_entropy,
        share_prompt=False,
    )


def _shared_prompt_log_probs(
    model, prompt_ids, prompt_mask, completion_ids, temperature, return_entropy
):
    first_rows, row_to_prompt = prompt_groups(prompt_ids, prompt_mask)  # (U,), (B,)
    unique_ids, unique_mask = prompt_ids[first_rows], prompt_mask[first_rows]  # (U, P)
    # Left padding shared by all these prompts would only cost compute: cut it.
    first_real = int(unique_mask.any(dim=0).long().argmax())
    unique_ids, unique_mask = unique_ids[:, first_real:], unique_mask[:, first_real:]  # (U, P')
    output = model(
        input_ids=unique_ids,
        attention_mask=unique_mask,
        position_ids=(unique_mask.long().cumsum(dim=-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
    )
    logits = output.logits[:, -1:, :][row_to_prompt]  # (B, 1, V): predicts completion token 1
    num_completion_tokens = completion_ids.shape[1]
    if num_completion_tokens > 1:
        rows = completion_ids.shape[0]
        prompt_lengths = unique_mask.sum(dim=1)[row_to_prompt]  # (B,)
        positions = prompt_lengths.unsqueeze(1) + torch.arange(
            num_completion_tokens - 1, device=completion_ids.device
        )  # (B, C - 1): generate's cumulative-mask positions
        attention_mask = torch.cat(
            [
                unique_mask[row_to_prompt],
                unique_mask.new_ones(rows, num_completion_tokens - 1),
            ],
            dim=1,
        )  # (B, P' + C - 1)
        rest = forward_after_prefix(
            model,
            output,
            row_to_prompt,  # the cache goes (U, ...) -> (B, ...)
            input_ids=completion_ids[:, :-1],
            attention_mask=attention_mask,
            position_ids=positions,
        ).logits  # (B, C - 1, V)
        logits = torch.cat([logits, rest], dim=1)  # (B, C, V)
    # tempered inside, after the float32 upcast (a bf16 division would round every logit)
    log_probs = selective_log_softmax(logits, completion_ids, temperature)  # (B, C)
    if return_entropy:
        return log_probs, token_entropy(logits, temperature)  # (B, C), (B, C)
    return log_probs
