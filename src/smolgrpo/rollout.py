"""Rollouts: sample completions for a batch of prompts, batched, with the KV cache.

One call samples `num_generations` completions per prompt (greedy when temperature is 0) and
returns token ids, masks and the decoded response text. The completion mask covers tokens up to
and including the first EOS; a completion with no EOS within `max_new_tokens` is truncated.
The response text that rewards score is `prefill + decoded completion`, because the prefill is
part of what the model answered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smolgrpo.grpo import completion_mask_from_ids


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # (N, P) left-padded, N = num_prompts * num_generations
    prompt_mask: torch.Tensor  # (N, P)
    completion_ids: torch.Tensor  # (N, C) right-padded
    completion_mask: torch.Tensor  # (N, C) 1 up to and including the first EOS
    truncated: torch.Tensor  # (N,) bool: no EOS within max_new_tokens
    responses: list[str]  # (N,) prefill + decoded completion, what the rewards score

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)  # (N,)


def eos_token_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    num_generations: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    prefill: str = "",
    ignore_eos: bool = False,
    synced: bool = False,
) -> Rollout:
    """Sample `num_generations` completions for each prompt; rows of one prompt are adjacent.

    `synced` (FSDP, where every forward is a collective): a rank whose rows have all finished
    keeps running forwards until every rank's have, so all ranks run the same number."""
    device = next(model.parameters()).device
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; call modeling.prepare_tokenizer first")
    # Always left-pad, whatever the tokenizer's own setting: new tokens are appended on the
    # right, so right padding would put pad tokens between a prompt and its completion.
    encoded = tokenizer(
        prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
    )
    prompt_ids = encoded["input_ids"].to(device)  # (B, P)
    prompt_mask = encoded["attention_mask"].to(device)  # (B, P)
    eos_ids = eos_token_ids(model, tokenizer)
    sampling = temperature > 0
    options = {
        "max_new_tokens": max_new_tokens,
        "do_sample": sampling,
        "num_return_sequences": num_generations,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": None if ignore_eos else eos_ids,
        "use_cache": True,
    }
    if synced:
        options["synced_gpus"] = True
    if ignore_eos:
        options["min_new_tokens"] = max_new_tokens
    if sampling:
        options.update(temperature=temperature, top_p=top_p, top_k=top_k or None)
    else:  # silence the model's own sampling defaults when decoding greedily
        options.update(temperature=None, top_p=None, top_k=None)
    was_training = model.training
    model.eval()
    try:
        output = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **options)
    finally:
        model.train(was_training)
    prompt_length = prompt_ids.shape[1]
    completion_ids = output[:, prompt_length:]  # (N, C)
    completion_mask, truncated = completion_mask_from_ids(
        completion_ids, [] if ignore_eos else eos_ids
    )
    # generate() pads finished rows with pad == eos; the mask already stops at the first EOS.
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(
        [ids[: int(n)] for ids, n in zip(completion_ids, completion_mask.sum(1))],
        skip_special_tokens=True,
    )
    return Rollout(
        prompt_ids=prompt_ids.repeat_interleave(num_generations, dim=0),  # (N, P)
        prompt_mask=prompt_mask.repeat_interleave(num_generations, dim=0),  # (N, P)
        completion_ids=completion_ids,
        completion_mask=completion_mask.long(),
        truncated=truncated,
        responses=[prefill + text for text in texts],
    )
