"""Per-token log-probabilities and entropies of completions from a model's logits.

Sampling and training must see the same distribution, so log-probs divide the logits by the
sampling temperature (in float32) and use the position ids that `generate` derives from the
attention mask (a no-op for RoPE models, which are shift-invariant, but not for absolute
position embeddings). Shapes: `B` rows, `C` completion tokens, `V` the vocabulary size.
"""

import torch
from torch import Tensor


def selective_log_softmax(logits: Tensor, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """``log_softmax(logits / temperature).gather(token_ids)`` without materialising the full
    log-softmax.

    Args:
        logits: (B, T, V); token_ids: (B, T) integer.
        temperature: divides the logits after the upcast below, as the sampler does: a bf16
            division would round each tempered logit to bf16's 8 bits.

    Returns:
        (B, T) log-probs. Half-precision logits are upcast to float32 one row at a time (bf16
        log-probs are too coarse for importance ratios), so the result is float32 for them and
        the input dtype otherwise.
    """
    low_precision = logits.dtype in (torch.float16, torch.bfloat16)
    row_log_probs = []
    # One batch row at a time: the only full-vocab temporary is (T, V), never (B, T, V).
    for row_logits, row_token_ids in zip(logits, token_ids, strict=True):
        row_logits = row_logits.float() if low_precision else row_logits  # (T, V)
        if temperature != 1.0:
            row_logits = row_logits / temperature  # (T, V)
        chosen_logits = row_logits.gather(-1, row_token_ids.unsqueeze(-1)).squeeze(-1)  # (T,)
        log_normalisers = torch.logsumexp(row_logits, dim=-1)  # (T,)
        row_log_probs.append(chosen_logits - log_normalisers)  # (T,)
    return torch.stack(row_log_probs)  # (B, T)


def per_token_log_probs(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    num_completion_tokens: int,
    chunk_size: int | None = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Log-probs of the last ``num_completion_tokens`` tokens of prompt+completion ids.

    Logits at positions ``L-C-1 .. L-2`` predict tokens ``L-C .. L-1``; ``logits_to_keep=C+1``
    spares the prompt's logits. Position ids follow ``generate`` (cumulative sum of the
    attention mask) so left-padded prompts get the same positions as when they were sampled
    (RoPE ignores a constant shift, absolute position embeddings do not).

    Args:
        model: a Hugging Face causal LM (accepts ``logits_to_keep`` and ``position_ids``).
        input_ids, attention_mask: (B, L) prompt followed by completion.
        num_completion_tokens: C, with 1 <= C < L.
        chunk_size: if set, run the forward on row chunks of this size so the (B, C, V)
            logits never exist at once. Gradients flow through every chunk.
        temperature: logits are divided by it, so ratios use the sampling distribution.
        return_entropy: also return the per-token entropy of the (tempered) policy, computed
            without gradient, for monitoring entropy collapse.

    Returns:
        (B, C) log-probs (float32 for half-precision models), and (B, C) entropies if asked.
    """
    total_length = input_ids.shape[1]
    if not 1 <= num_completion_tokens < total_length:
        raise ValueError(f"need 1 <= num_completion_tokens < {total_length}")
    position_ids = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)  # (B, L)
    rows_per_chunk = chunk_size if chunk_size else input_ids.shape[0]
    chunk_log_probs, chunk_entropies = [], []
    for start in range(0, input_ids.shape[0], rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        logits = model(
            input_ids=input_ids[rows],
            attention_mask=attention_mask[rows],
            position_ids=position_ids[rows],
            logits_to_keep=num_completion_tokens + 1,
            use_cache=False,
        ).logits  # (b, C + 1, V)
        logits = logits[:, :-1, :]  # (b, C, V): the last logit predicts past the sequence
        completion_ids = input_ids[rows, -num_completion_tokens:]  # (b, C)
        # tempered inside, after the float32 upcast
        chunk_log_probs.append(selective_log_softmax(logits, completion_ids, temperature))
        if return_entropy:
            chunk_entropies.append(token_entropy(logits, temperature))  # (b, C)
    log_probs = torch.cat(chunk_log_probs, dim=0)  # (B, C)
    if return_entropy:
        return log_probs, torch.cat(chunk_entropies, dim=0)  # (B, C), (B, C)
    return log_probs


@torch.no_grad()
def token_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy ``logsumexp(l) - sum softmax(l) * l`` of ``l = logits / temperature`` per
    position, one row at a time, no grad; the division is done in float32.

    Args:
        logits: (B, T, V). Returns (B, T) float32.
    """
    rows = []
    for row_logits in logits:
        row_logits = row_logits.float()  # (T, V)
        if temperature != 1.0:
            row_logits = row_logits / temperature  # (T, V)
        probabilities = torch.softmax(row_logits, dim=-1)  # (T, V)
        rows.append(
            torch.logsumexp(row_logits, dim=-1) - (probabilities * row_logits).sum(-1)
        )  # (T,)
    return torch.stack(rows)  # (B, T)


def completion_mask_from_ids(
    completion_ids: Tensor,
    eos_token_ids: list[int] | int,
    pad_token_id: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Mask of the tokens the policy actually produced, and which completions were truncated.

    Args:
        completion_ids: (B, C) sampled ids, right-padded after the end of each completion.
        eos_token_ids: one id or several (chat models often stop on more than one).
        pad_token_id: if given and not an EOS id, pad positions are masked too (they were never
            sampled). If pad equals an EOS id, its first occurrence counts as that EOS.

    Returns:
        mask (B, C) int64, 1 up to and including the first EOS and 0 after it; truncated (B,)
        bool, True where no EOS was emitted (the whole row is then kept, minus pads).
    """
    eos_ids = [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids)
    eos_id_tensor = torch.tensor(eos_ids, device=completion_ids.device)  # (E,)
    is_eos = torch.isin(completion_ids, eos_id_tensor)  # (B, C)
    truncated = ~is_eos.any(dim=1)  # (B,)
    completion_length = completion_ids.shape[1]
    # argmax returns the first maximum, i.e. the first EOS; rows without EOS keep everything.
    first_eos_index = torch.where(
        truncated,
        torch.full_like(truncated, completion_length, dtype=torch.long),
        is_eos.int().argmax(dim=1),
    )  # (B,)
    positions = torch.arange(completion_length, device=completion_ids.device)  # (C,)
    mask = positions.unsqueeze(0) <= first_eos_index.unsqueeze(1)  # (B, C)
    if pad_token_id is not None and pad_token_id not in eos_ids:
        mask = mask & (completion_ids != pad_token_id)  # (B, C)
    return mask.long(), truncated
