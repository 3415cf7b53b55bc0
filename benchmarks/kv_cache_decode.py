"""Decode speed with the in-place KV cache (kv_cache.preallocate) against transformers'
concatenating DynamicCache, side by side in one process, on the embedded model.

    python benchmarks/kv_cache_decode.py [--rows-per-prompt 8] [--tokens 200] [--repeats 2]

Both sides sample with the same seed and must produce the same tokens; the script says so.
First it profiles three decode steps of the concatenating side at ~280 cached tokens: the
share of `aten::cat` (the cache growing) and the PyTorch operator calls per step.
"""

from __future__ import annotations

import argparse
import time

import torch

import smolgrpo.generation.rollout as rollout
from smolgrpo.generation.kv_cache import preallocate
from smolgrpo.models.loading import load_model_and_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows-per-prompt", type=int, default=8, help="G (default: 8)")
    parser.add_argument("--tokens", type=int, default=200, help="forced new tokens (200)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds (2)")
    args = parser.parse_args()
    model, tokenizer = load_model_and_tokenizer("embedded", device="cpu")
    model.eval()
    prompts = [
        f"<|im_start|>user\nTom has {i} apples and buys {i + 7} more, then gives away 3. How many does "
        "he have now? Explain.<|im_end|>\n<|im_start|>assistant\n"
        for i in range(4)
    ]
    ids, mask = rollout.encode_prompts(tokenizer, prompts)
    profile_steps(model, ids.repeat_interleave(args.rows_per_prompt, dim=0))
    rows = len(prompts) * args.rows_per_prompt
    sides = {"concatenating DynamicCache": lambda cache, extra: False, "in place": preallocate}
    outputs, times = {}, {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, hook in sides.items():  # alternate, so drift hits both sides alike
            rollout.preallocate = hook
            torch.manual_seed(0)
            started = time.perf_counter()
            outputs[name] = rollout.decode(
                model,
                ids,
                mask,
                [],
                pad_token_id=tokenizer.pad_token_id,
                num_generations=args.rows_per_prompt,
                max_new_tokens=args.tokens,
                temperature=1.0,
                ignore_eos=True,
            )
            times[name].append(time.perf_counter() - started)
    rollout.preallocate = preallocate
    print(f"{rows} rows x {args.tokens} tokens, {torch.get_num_threads()} threads")
    for name, seconds in times.items():
        per_step = ", ".join(f"{1000 * s / args.tokens:.0f}" for s in seconds)
        print(f"{name}: {per_step} ms per decode step")
    same = torch.equal(*outputs.values())
    print(
        f"same tokens: {same}; speed-up {min(times['concatenating DynamicCache']) / min(times['in place']):.2f}x (best of each)"
    )


@torch.no_grad()
def profile_steps(model, ids: torch.Tensor, cached: int = 280, steps: int = 3) -> None:
    """Prefill, grow the DynamicCache to `cached` positions, then profile `steps` decode steps."""
    from smolgrpo.models.loading import cache_arguments, returned_cache

    rows, length = ids.shape
    cache = returned_cache(model(input_ids=ids, use_cache=True))
    token = ids[:, -1:]

    def step(position: int) -> None:
        positions = torch.full((rows, 1), position)
        model(input_ids=token, position_ids=positions, **cache_arguments(model, cache))

    for position in range(length, cached):
        step(position)
    with torch.profiler.profile() as profiler:
        for position in range(cached, cached + steps):
            step(position)
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    cat = sum(event.self_cpu_time_total for event in events if event.key == "aten::cat")
    calls = sum(event.count for event in events) / steps
    print(
        f"profile, {rows} rows at {cached} cached tokens: aten::cat {cat / total:.0%} of the "
        f"CPU time, {calls:,.0f} operator calls per decode step"
    )


if __name__ == "__main__":
    main()
