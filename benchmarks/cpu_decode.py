"""CPU decode speed, three ways side by side in one process, against this machine's bounds.

    python benchmarks/cpu_decode.py [--rows 32 64] [--tokens 64] [--threads 2] [--no-compile] [--int8]

The ways, all greedy on the embedded model in float32, EOS masked so every row decodes
exactly --tokens tokens:
- eager: rollout.decode's eager loop (in-place KV cache, finished rows dropped);
- static: the static-cache loop the CUDA-graph path uses (graph_decode.static_decode), no graph;
- compiled: the static loop with the model's forward under torch.compile (dynamic=False:
  one graph for the step's fixed shapes; the compile time is printed apart);
- int8 (--int8, an experiment): the eager loop on a copy of the model whose Linear layers are
  torch's dynamic int8 ones (weights int8 per tensor, activations quantized on the fly). Other
  numerics, so other tokens: what a quantized sampler would buy, not a way the loop can take
  without an importance correction (grpo.sampler_ratio_cap).
The exact ways must write the same tokens; the script says how many rows agree with the eager loop.
The bounds: a decode step reads every weight once (memory: the weights' bytes over the copy
bandwidth measured here) and does 2 x parameters x rows FLOPs (compute: over the matmul rate
measured at the step's shapes). Finally a profile of eager decode steps (the prefill
subtracted) gives aten::mm's share of their operator time and the operator calls a step.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

import smolgrpo.generation.rollout as rollout
from smolgrpo.models.loading import load_model_and_tokenizer

PROMPT = (
    "<|im_start|>user\nTom has {i} apples and buys {j} more, then gives away 3. How many does he "
    "have now? Explain.<|im_end|>\n<|im_start|>assistant\n"
)


def copy_bandwidth_gbs(gib: float = 1.0) -> float:
    """Read bandwidth estimate: bytes read per second of a large tensor copy (best of 5)."""
    source = torch.ones(int(gib * 2**30) // 4)
    target = torch.empty_like(source)
    target.copy_(source)
    best = min(_timed(lambda: target.copy_(source)) for _ in range(5))
    return source.numel() * 4 / best / 1e9


def matmul_gflops(rows: int, width: int, out: int) -> float:
    x, w = torch.randn(rows, width), torch.randn(out, width)
    for _ in range(3):
        x @ w.T
    seconds = min(_timed(lambda: x @ w.T) for _ in range(30))
    return 2 * rows * width * out / seconds / 1e9


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def decode_once(
    model, tokenizer, rows: int, tokens: int, static: bool
) -> tuple[torch.Tensor, float]:
    prompts = [PROMPT.format(i=i, j=i + 7) for i in range(rows)]
    ids, mask = rollout.encode_prompts(tokenizer, prompts)
    settings = rollout.DecodeSettings(
        pad_token_id=tokenizer.pad_token_id, max_new_tokens=tokens, ignore_eos=True, static=static
    )
    started = time.perf_counter()
    decoded = rollout.decode(model, ids, mask, [], settings)
    return decoded.ids, time.perf_counter() - started


def _profiled(model, tokenizer, rows: int, tokens: int) -> dict[str, tuple[float, int]]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        decode_once(model, tokenizer, rows, tokens, static=False)
    return {e.key: (e.self_cpu_time_total, e.count) for e in profiler.key_averages()}


def mm_share(model, tokenizer, rows: int, steps: int = 16) -> tuple[float, float]:
    """aten::mm's share of the eager decode steps' operator time, and operator calls per step.
    The prefill is taken out: a decode of 1 token is profiled too and subtracted."""
    long = _profiled(model, tokenizer, rows, steps + 1)
    short = _profiled(model, tokenizer, rows, 1)
    times = {k: t - short.get(k, (0, 0))[0] for k, (t, _) in long.items()}
    calls = sum(n - short.get(k, (0, 0))[1] for k, (_, n) in long.items())
    return times.get("aten::mm", 0.0) / sum(times.values()), calls / steps


def int8_copy(model):
    """A copy with torch's dynamic int8 Linear layers (a deprecated API in recent torch)."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled way")
    parser.add_argument("--int8", action="store_true", help="add the dynamic-int8 way")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer("embedded", device="cpu", dtype="float32")
    model.eval()
    parameters = sum(p.numel() for p in model.parameters())
    hidden, inner = model.config.hidden_size, model.config.intermediate_size
    bandwidth = copy_bandwidth_gbs()
    result = {"threads": args.threads, "tokens": args.tokens, "copy_read_gbs": bandwidth,
              "parameters": parameters, "rows": {}}  # fmt: skip
    print(
        f"{parameters / 1e6:.1f} M parameters, {args.threads} threads; copy: {bandwidth:.1f} GB/s read"
    )
    plain_forward = model.forward
    compiled_forward = None if args.no_compile else torch.compile(plain_forward, dynamic=False)
    int8_model = int8_copy(model) if args.int8 else None
    for rows in args.rows:
        gflops = matmul_gflops(rows, hidden, inner)
        bounds = {"memory_ms": parameters * 4 / (bandwidth * 1e9) * 1e3,
                  "compute_ms": 2 * parameters * rows / (gflops * 1e9) * 1e3}  # fmt: skip
        ways = {"eager": (model, False, None), "static": (model, True, None)}
        if compiled_forward is not None:
            ways["compiled"] = (model, True, compiled_forward)
        if int8_model is not None:
            ways["int8"] = (int8_model, False, None)
        measured, first = {}, {}
        for name, (way_model, static, forward) in ways.items():
            model.forward = forward or plain_forward
            try:
                ids, warm = decode_once(way_model, tokenizer, rows, args.tokens, static)  # warm-up
                ids, seconds = decode_once(way_model, tokenizer, rows, args.tokens, static)
            finally:
                model.forward = plain_forward
            first[name] = ids
            measured[name] = {"ms_per_step": seconds / args.tokens * 1e3,
                              "tokens_per_s": rows * args.tokens / seconds,
                              "first_call_s": warm,
                              "rows_agreeing_with_eager": int((ids == first["eager"]).all(1).sum())}  # fmt: skip
        share, calls = mm_share(model, tokenizer, rows)
        result["rows"][rows] = {"ways": measured, "bounds": bounds, "matmul_gflops": gflops,
                                "mm_share_eager": share, "op_calls_per_step": calls}  # fmt: skip
        print(f"\n{rows} rows x {args.tokens} tokens: matmul {gflops:.0f} GFLOP/s at the step's "
              f"shapes; bound {bounds['memory_ms']:.0f} ms/step (memory), "
              f"{bounds['compute_ms']:.0f} ms/step (compute); aten::mm {share:.0%} of an eager "
              f"decode step's operator time (prefill excluded), {calls:.0f} operator calls a step")  # fmt: skip
        for name, row in measured.items():
            print(f"  {name:>9}: {row['ms_per_step']:6.1f} ms/step  {row['tokens_per_s']:7.1f} tok/s"
                  f"  first call {row['first_call_s']:6.1f} s  rows = eager: "
                  f"{row['rows_agreeing_with_eager']}/{rows}")  # fmt: skip
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
