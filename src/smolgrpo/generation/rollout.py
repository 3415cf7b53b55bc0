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

from smolgrpo.algo.log_probs import completion_mask_from_ids
from smolgrpo.generation import graph_decode
from smolgrpo.generation.calculator import Calculator
from smolgrpo.generation.kv_cache import preallocate
from smolgrpo.generation.sampler_log_probs import SamplerLogProbs, sample_with_log_probs
from smolgrpo.models import distributed as dist_utils
from smolgrpo.models.loading import cache_arguments, returned_cache
from smolgrpo.runs.interrupts import StopRequested


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
    # (N, C) float32 log-prob of each sampled token under the distribution it was drawn from
    # (sampler_log_probs.py); NaN off the completion mask and on forced tokens. None: greedy.
    sampler_log_probs: torch.Tensor | None = None

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
    calculator.Calculator, a tools.ToolBox, or None) and `cuda_graphs`: see `decode`."""
    device = next(model.parameters()).device
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; call modeling.prepare_tokenizer first")
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)  # (B, P), (B, P)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    eos_ids = eos_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        decoded = decode(
            model,
            prompt_ids,
            prompt_mask,
            eos_ids,
            DecodeSettings(
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
            ),
        )
    finally:
        model.train(was_training)
    completion_ids, forced_mask = decoded.ids, decoded.forced
    completion_mask, truncated = completion_mask_from_ids(
        completion_ids, [] if ignore_eos else eos_ids
    )
    # generate() pads finished rows with pad == eos; the mask already stops at the first EOS.
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    sampler_log_probs = decoded.sampler_log_probs
    if sampler_log_probs is not None:  # only the tokens the sampler drew and the loss counts
        drawn = completion_mask.bool()  # (N, C)
        if forced_mask is not None:
            drawn = drawn & ~forced_mask
        sampler_log_probs = sampler_log_probs.masked_fill(~drawn, float("nan"))
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
        sampler_log_probs=sampler_log_probs,
    )


# ----------------------------------------------------------------------------- our decode loop
def sample_next_tokens(
    logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """Next token per row from (N, V) logits: argmax when temperature is 0, else a sample from
    softmax(logits / temperature) restricted to the top_k tokens and the top_p nucleus."""
    if temperature <= 0:
        return logits.argmax(dim=-1)  # (N,)
    return sample_with_log_probs(logits, temperature, top_p, top_k)[0]  # (N,)


@dataclass(frozen=True)
class DecodeSettings:
    """How `decode` samples. `synced` (FSDP, where every forward is a collective): a rank whose
    rows have all finished keeps running (dummy) forwards until every rank's have; it samples
    exactly as without it. `should_stop` is called before every decode step (True raises
    `StopRequested`; under `synced` it must answer alike on every rank). `calculator`
    (calculator.py): after a sampled token that ends "expression =", the row's next tokens are
    the result's, not samples. `static`: decode on a static KV cache, each step a CUDA graph
    (graph_decode.py); None picks it on a CUDA device when graphs are enabled, the attention is
    sdpa and neither `synced` nor `calculator` is set; True forces it (on CPU: no graph)."""

    pad_token_id: int
    num_generations: int = 1
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    ignore_eos: bool = False
    synced: bool = False
    should_stop: Callable[[], bool] | None = None
    calculator: Calculator | None = None  # or a tools.ToolBox: the same interface
    static: bool | None = None

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        return sample_next_tokens(logits, self.temperature, self.top_p, self.top_k)

    def draw(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N,) tokens and the (N,) log-probs they were drawn with (None: greedy, not drawn)."""
        if self.temperature <= 0:
            return self.sample(logits), None
        return sample_with_log_probs(logits, self.temperature, self.top_p, self.top_k)

    def log_prob_recorder(self, rows: int, device) -> SamplerLogProbs | None:
        """Where a decode records its drawn tokens' log-probs (None: greedy, nothing drawn)."""
        return None if self.temperature <= 0 else SamplerLogProbs(rows, self.max_new_tokens, device)


@dataclass
class Decoded:
    """What `decode` returns, whichever path ran. C is the longest completion, not the budget;
    finished rows are padded with the pad id after their EOS."""

    ids: torch.Tensor  # (N, C)
    forced: torch.Tensor | None = None  # (N, C) bool: tokens the calculator wrote (None: off)
    sampler_log_probs: torch.Tensor | None = None  # (N, C) of the drawn tokens (None: greedy)


@dataclass
class _Prefill:
    """The prompts' forward, shared by both decode paths: the KV cache holds G copies of each
    prompt, `logits` predict each row's first token."""

    cache: object
    logits: torch.Tensor  # (N, V)
    prompt_mask: torch.Tensor  # (N, P)
    next_position: torch.Tensor  # (N,)
    eos: torch.Tensor  # (E,) the EOS ids


@torch.no_grad()
def decode(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_ids: list[int],
    settings: DecodeSettings,
) -> Decoded:
    """Batched sampling with the KV cache, G completions per prompt.

    Faster than `model.generate(num_return_sequences=G)` for GRPO because each prompt is
    prefilled once and its KV cache copied to its G rows (`generate` prefills every copy), rows
    that have finished are dropped from the batch, and a step does nothing per token beyond the
    forward and the sampling. Two paths: the static-cache loop (`graph_decode.static_decode`)
    and the eager loop below; see DecodeSettings.static for which runs."""
    start = _prefill(model, prompt_ids, prompt_mask, eos_ids, settings.num_generations)
    recorder = settings.log_prob_recorder(start.prompt_mask.shape[0], start.logits.device)
    ids = _static_path(model, start, settings, recorder)
    if ids is not None:
        log_probs = None if recorder is None else recorder.result(ids.shape[1])
        return Decoded(ids, sampler_log_probs=log_probs)
    return _eager_decode(model, start, settings, recorder)


def _prefill(model, prompt_ids, prompt_mask, eos_ids, num_generations: int) -> _Prefill:
    # Left padding shared by every prompt is dead weight in every forward: cut it.
    first_real = int(prompt_mask.any(dim=0).long().argmax())
    prompt_ids, prompt_mask = prompt_ids[:, first_real:], prompt_mask[:, first_real:]  # (B, P)
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
    return _Prefill(
        cache=cache,
        logits=logits,
        prompt_mask=prompt_mask.repeat_interleave(num_generations, dim=0),
        next_position=positions[:, -1].repeat_interleave(num_generations) + 1,
        eos=torch.tensor(eos_ids, device=prompt_ids.device, dtype=torch.long),
    )


def _static_path(
    model, start: _Prefill, settings: DecodeSettings, recorder: SamplerLogProbs | None = None
) -> torch.Tensor | None:
    """(N, C) ids from the static-cache loop, or None where it does not apply."""
    on_cuda = start.logits.device.type == "cuda"
    static = settings.static
    if static is None:
        static = on_cuda and graph_decode.graphs_enabled()
    if not static or settings.synced or settings.calculator is not None:
        return None
    if not graph_decode.supports_static(model):
        return None
    write_position = graph_decode.static_cache(start.cache, settings.max_new_tokens)
    if write_position is None:
        return None
    return graph_decode.static_decode(
        model,
        write_position,
        start.logits,
        start.prompt_mask,
        start.next_position,
        start.eos,
        cache_kwargs=cache_arguments(model, start.cache),
        pad_token_id=settings.pad_token_id,
        max_new_tokens=settings.max_new_tokens,
        sample=settings.draw,
        ignore_eos=settings.ignore_eos,
        should_stop=settings.should_stop,
        capture=on_cuda and graph_decode.graphs_enabled(),
        record=None if recorder is None else recorder.record,
    )


def _eager_decode(
    model, start: _Prefill, settings: DecodeSettings, recorder: SamplerLogProbs | None = None
) -> Decoded:
    """The eager loop: one forward per token on a growing (in-place) KV cache, finished rows
    dropped from the batch."""
    cache, logits, eos = start.cache, start.logits, start.eos
    rows, prompt_length = start.prompt_mask.shape
    budget, device = settings.max_new_tokens, logits.device
    preallocate(cache, budget)  # new positions written in place (kv_cache.py)
    # The attention mask grows by one column a step; allocate it once.
    attention = torch.ones(
        rows, prompt_length + budget, dtype=start.prompt_mask.dtype, device=device
    )
    attention[:, :prompt_length] = start.prompt_mask
    completion = torch.full((rows, budget), settings.pad_token_id, dtype=torch.long, device=device)
    calculator = None
    if settings.calculator is not None:
        calculator = _CalculatorRows(settings.calculator, rows, budget, device)
    active = torch.arange(rows, device=device)  # rows still generating, in cache order
    generated = 0
    cache_kwargs = cache_arguments(model, cache)  # the same cache object, updated in place
    done = False  # this rank has nothing left to generate
    for step in range(budget):
        if settings.should_stop is not None and settings.should_stop():
            raise StopRequested("stopped while decoding")
        if not done:
            if settings.ignore_eos and len(eos):
                logits[:, eos] = float("-inf")
            tokens, log_probs = settings.draw(logits)  # (n,), (n,) or None
            if recorder is not None:
                recorder.record(step, log_probs, active)
            if calculator is not None:
                tokens = calculator.step(tokens, active, step, completion)
            completion[active, step] = tokens
            generated = step + 1
            running = torch.ones_like(tokens, dtype=torch.bool)
            if not settings.ignore_eos:
                running = ~torch.isin(tokens, eos)  # (n,)
            done = step == budget - 1 or not bool(running.any())
            if not done and not bool(running.all()):
                # Drop finished rows from the batch (and their KV cache): later steps cost
                # only what the unfinished rows need.
                keep = running.nonzero().squeeze(-1)  # (n',)
                cache.batch_select_indices(keep)
                active, tokens = active[keep], tokens[keep]
        if (not dist_utils.any_true(not done)) if settings.synced else done:
            break
        if done:  # synced, another rank is still generating: join its collective forward
            model(input_ids=completion[:1, :1], use_cache=False)
            continue
        output = model(
            input_ids=tokens.unsqueeze(-1),
            attention_mask=attention[active, : prompt_length + step + 1],
            position_ids=(start.next_position[active] + step).unsqueeze(-1),
            **cache_kwargs,
        )
        logits = output.logits[:, -1, :]  # (n, V)
    forced = None if calculator is None else calculator.forced[:, :generated]
    log_probs = None if recorder is None else recorder.result(generated)
    return Decoded(completion[:, :generated], forced, log_probs)


class _CalculatorRows:
    """Per-row calculator state of the eager loop: results still to write, and which tokens
    were written rather than sampled."""

    def __init__(self, calculator: Calculator, rows: int, budget: int, device) -> None:
        self.calculator = calculator
        self.forced = torch.zeros(rows, budget, dtype=torch.bool, device=device)  # (N, C)
        self.pending: dict[int, list[int]] = {}  # row -> result tokens still to write
        self.triggers = torch.tensor(calculator.trigger_ids, dtype=torch.long, device=device)

    def step(self, tokens, active, step, completion) -> torch.Tensor:
        """This step's tokens with pending results written in; queues new results."""
        forced, pending = self.forced, self.pending
        if pending:
            tokens = tokens.clone()
            for index, row in enumerate(active.tolist()):
                queue = pending.get(row)
                if queue:
                    tokens[index] = queue.pop(0)
                    forced[row, step] = True
                    if not queue:
                        del pending[row]
        sampled_trigger = torch.isin(tokens, self.triggers) & ~forced[active, step]  # (n,)
        for index in sampled_trigger.nonzero().flatten().tolist():
            row = int(active[index])
            start = max(0, step - self.calculator.tail_tokens)
            tail = completion[row, start:step].tolist() + [int(tokens[index])]
            result = self.calculator.result_tokens(tail)
            if result:
                pending[row] = result
        return tokens
