"""Rollouts: sample completions for a batch of prompts, batched, with the KV cache.

One call samples `num_generations` completions per prompt (greedy when temperature is 0) and
returns token ids, masks and the decoded response text. The completion mask covers tokens up to
and including the first EOS; a completion with no EOS within `max_new_tokens` is truncated.
The response text that rewards score is `prefill + decoded completion`, because the prefill is
part of what the model answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from smolgrpo import distributed as dist_utils
from smolgrpo import graph_decode
from smolgrpo.calculator import TAIL_TOKENS
from smolgrpo.grpo import completion_mask_from_ids
from smolgrpo.interrupts import StopRequested
from smolgrpo.kv_cache import preallocate
from smolgrpo.modeling import cache_arguments, returned_cache


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # (N, P) left-padded, N = num_prompts * num_generations
    prompt_mask: torch.Tensor  # (N, P)
    completion_ids: torch.Tensor  # (N, C) right-padded
    completion_mask: torch.Tensor  # (N, C) 1 up to and including the first EOS
    truncated: torch.Tensor  # (N,) bool: no EOS within max_new_tokens
    responses: list[str]  # (N,) prefill + decoded completion, what the rewards score
    # (N, C) tokens the calculator wrote, not sampled from the policy (None: calculator off)
    forced_mask: torch.Tensor | None = None

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)  # (N,)


def eos_token_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def encode_prompts(tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (B, P). Always left-padded, whatever the tokenizer's own
    setting: new tokens are appended on the right, so right padding would put pad tokens
    between a prompt and its completion."""
    encoded = tokenizer(
        prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
    )
    return encoded["input_ids"], encoded["attention_mask"]


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
    should_stop: Callable[[], bool] | None = None,
    calculator=None,
    cuda_graphs: bool = True,
) -> Rollout:
    """Sample `num_generations` completions for each prompt; rows of one prompt are adjacent.

    `synced` (FSDP, where every forward is a collective), `should_stop`, `calculator` (a
    calculator.Calculator, or None) and `cuda_graphs`: see `decode`."""
    device = next(model.parameters()).device
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; call modeling.prepare_tokenizer first")
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)  # (B, P), (B, P)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    eos_ids = eos_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        completion_ids = decode(
            model,
            prompt_ids,
            prompt_mask,
            eos_ids,
            pad_token_id=tokenizer.pad_token_id,
            num_generations=num_generations,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            ignore_eos=ignore_eos,
            synced=synced,
            should_stop=should_stop,
            calculator=calculator,
            static=None if cuda_graphs else False,
        )  # (N, C), or with the calculator ((N, C), its (N, C) forced mask)
    finally:
        model.train(was_training)
    forced_mask = None
    if calculator is not None:
        completion_ids, forced_mask = completion_ids
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
        forced_mask=None if forced_mask is None else forced_mask & (completion_mask > 0),
    )


# ----------------------------------------------------------------------------- our decode loop
def sample_next_tokens(
    logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """Next token per row from (N, V) logits: argmax when temperature is 0, else a sample from
    softmax(logits / temperature) restricted to the top_k tokens and the top_p nucleus."""
    if temperature <= 0:
        return logits.argmax(dim=-1)  # (N,)
    logits = logits.float() / temperature  # (N, V)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (N, V)
        sorted_probabilities = sorted_logits.softmax(dim=-1)  # (N, V)
        # Drop a token when the tokens ranked above it already hold top_p of the mass; the
        # most likely token is always kept.
        drop = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities >= top_p  # (N, V)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1).squeeze(-1)  # (N,)


@torch.no_grad()
def decode(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_ids: list[int],
    *,
    pad_token_id: int,
    num_generations: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    ignore_eos: bool = False,
    synced: bool = False,
    should_stop: Callable[[], bool] | None = None,
    calculator=None,
    static: bool | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Batched sampling with the KV cache, G completions per prompt; returns (N, C) ids.

    Faster than `model.generate(num_return_sequences=G)` for GRPO because each prompt is
    prefilled once and its KV cache copied to its G rows (`generate` prefills every copy), rows
    that have finished are dropped from the batch, and a step does nothing per token beyond the
    forward and the sampling. Finished rows are padded with `pad_token_id` after their EOS.

    `synced` (FSDP, where every forward is a collective): a rank whose rows have all finished
    keeps running (dummy) forwards until every rank's have, so all ranks run the same number.
    It samples exactly as without `synced`, so FSDP and plain training draw the same tokens.

    `should_stop` is called before every decode step; when it returns True, `StopRequested` is
    raised and the partial completions are dropped (interrupts.py). Under `synced` it must
    answer alike on every rank.

    `calculator` (calculator.py): after a sampled token that ends "expression =", the next
    tokens of that row are the result's, not samples; returns ((N, C) ids, (N, C) bool mask of
    those forced tokens). Rows without a pending result sample as without the calculator.

    `static`: decode on a static KV cache, each step a CUDA graph (graph_decode.py). None
    (default): on a CUDA device when graphs are enabled, the attention is sdpa, and neither
    `synced` nor `calculator` is set. True forces the static path (on CPU: without the graph).
    """
    # Left padding shared by every prompt is dead weight in every forward: cut it.
    first_real = int(prompt_mask.any(dim=0).long().argmax())
    prompt_ids, prompt_mask = prompt_ids[:, first_real:], prompt_mask[:, first_real:]  # (B, P)
    batch, prompt_length = prompt_ids.shape
    rows = batch * num_generations
    device = prompt_ids.device
    eos = torch.tensor(eos_ids, device=device, dtype=torch.long)
    positions = (prompt_mask.long().cumsum(dim=-1) - 1).clamp(min=0)  # (B, P)
    output = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    cache = returned_cache(output)
    logits = output.logits[:, -1, :]  # (B, V)
    if num_generations > 1:
        cache.batch_repeat_interleave(num_generations)
        logits = logits.repeat_interleave(num_generations, dim=0)  # (N, V)
    row_prompt_mask = prompt_mask.repeat_interleave(num_generations, dim=0)  # (N, P)
    next_position = positions[:, -1].repeat_interleave(num_generations) + 1  # (N,)
    if static is None:
        static = device.type == "cuda" and graph_decode.graphs_enabled()
    if static and not synced and calculator is None and graph_decode.supports_static(model):
        write_position = graph_decode.static_cache(cache, max_new_tokens)
        if write_position is not None:
            return graph_decode.static_decode(
                model,
                write_position,
                logits,
                row_prompt_mask,
                next_position,
                eos,
                cache_kwargs=cache_arguments(model, cache),
                pad_token_id=pad_token_id,
                max_new_tokens=max_new_tokens,
                sample=lambda scores: sample_next_tokens(scores, temperature, top_p, top_k),
                ignore_eos=ignore_eos,
                should_stop=should_stop,
                capture=device.type == "cuda" and graph_decode.graphs_enabled(),
            )
    preallocate(cache, max_new_tokens)  # new positions written in place (kv_cache.py)
    # The attention mask grows by one column a step; allocate it once.
    attention = torch.ones(
        rows, prompt_length + max_new_tokens, dtype=prompt_mask.dtype, device=device
    )
    attention[:, :prompt_length] = row_prompt_mask
    completion = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    active = torch.arange(rows, device=device)  # rows still generating, in cache order
    generated = 0
    cache_kwargs = cache_arguments(model, cache)  # the same cache object, updated in place
    done = False  # this rank has nothing left to generate
    forced = pending = triggers = None
    if calculator is not None:
        forced = torch.zeros(rows, max_new_tokens, dtype=torch.bool, device=device)
        pending: dict[int, list[int]] = {}  # row -> result tokens still to write
        triggers = torch.tensor(calculator.trigger_ids, dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        if should_stop is not None and should_stop():
            raise StopRequested("stopped while decoding")
        if not done:
            if ignore_eos and len(eos_ids):
                logits[:, eos] = float("-inf")
            tokens = sample_next_tokens(logits, temperature, top_p, top_k)  # (n,)
            if calculator is not None:
                tokens = _calculator_step(
                    calculator, tokens, active, step, completion, forced, pending, triggers
                )
            completion[active, step] = tokens
            generated = step + 1
            running = torch.ones_like(tokens, dtype=torch.bool)
            if not ignore_eos:
                running = ~torch.isin(tokens, eos)  # (n,)
            done = step == max_new_tokens - 1 or not bool(running.any())
            if not done and not bool(running.all()):
                # Drop finished rows from the batch (and their KV cache): later steps cost
                # only what the unfinished rows need.
                keep = running.nonzero().squeeze(-1)  # (n',)
                cache.batch_select_indices(keep)
                active, tokens = active[keep], tokens[keep]
        if (not dist_utils.any_true(not done)) if synced else done:
            break
        if done:  # synced, another rank is still generating: join its collective forward
            model(input_ids=completion[:1, :1], use_cache=False)
            continue
        output = model(
            input_ids=tokens.unsqueeze(-1),
            attention_mask=attention[active, : prompt_length + step + 1],
            position_ids=(next_position[active] + step).unsqueeze(-1),
            **cache_kwargs,
        )
        logits = output.logits[:, -1, :]  # (n, V)
    if calculator is not None:
        return completion[:, :generated], forced[:, :generated]
    return completion[:, :generated]  # (N, C): C is the longest completion, not the budget


def _calculator_step(calculator, tokens, active, step, completion, forced, pending, triggers):
    """This step's tokens with pending calculator results written in; queues new results."""
    if pending:
        tokens = tokens.clone()
        for index, row in enumerate(active.tolist()):
            queue = pending.get(row)
            if queue:
                tokens[index] = queue.pop(0)
                forced[row, step] = True
                if not queue:
                    del pending[row]
    sampled_trigger = torch.isin(tokens, triggers) & ~forced[active, step]  # (n,)
    for index in sampled_trigger.nonzero().flatten().tolist():
        row = int(active[index])
        start = max(0, step - TAIL_TOKENS)
        tail = completion[row, start:step].tolist() + [int(tokens[index])]
        result = calculator.result_tokens(tail)
        if result:
            pending[row] = result
    return tokens
