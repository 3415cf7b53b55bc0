"""gpu_proof.py's graphs part: the CUDA-graph decode (src/smolgrpo/generation/graph_decode.py) against the
eager loop, on the same rows, before the recipe relies on it.

    python benchmarks/gpu_proof_graphs.py --model DIR --data DIR --output FILE.json [--device cuda]

Decodes `--rows` test prompts greedily for exactly `--tokens` tokens (EOS masked out, so every
mode does the same work) under bf16 autocast on a GPU, three ways:
- eager: rollout.decode's eager loop (dynamic cache written in place, SMOLGRPO_CUDA_GRAPHS=0);
- static: the static-cache loop without the graph (the same kernels the graph records);
- graph: the static-cache loop with each step replayed as a CUDA graph.
It reports each mode's seconds and tokens/s and how many rows the graph decodes exactly as the
static loop (the same kernels: all of them, unless the capture went wrong) and as the eager loop
(bf16 sums in another order: rows part at near-ties, as batched and single decoding do). On a
CPU, or without CUDA, the graph mode is skipped and the other two still run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import warnings
from pathlib import Path


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import smolgrpo.generation.graph_decode as graph_decode
    from smolgrpo.generation.rollout import DecodeSettings, decode, encode_prompts, eos_token_ids
    from smolgrpo.tasks.data import load_problems
    from smolgrpo.tasks.prompts import PROMPT_TEMPLATE_FILE, PromptTemplate, render_prompt

    device = torch.device(args.device if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    saved = Path(args.model) / PROMPT_TEMPLATE_FILE  # the prompt it was trained with, if any
    template = PromptTemplate(**json.loads(saved.read_text())) if saved.is_file() else None
    template = template or PromptTemplate()
    problems = load_problems(args.data, "test", limit=args.rows)
    prompts = [render_prompt(tokenizer, p.question, template) for p in problems]
    ids, mask = encode_prompts(tokenizer, prompts)
    ids, mask = ids.to(device), mask.to(device)
    eos = eos_token_ids(model, tokenizer)
    on_gpu = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()
    result = {"device": torch.cuda.get_device_name(device) if on_gpu else "cpu"}
    result |= {"rows": len(prompts), "tokens": args.tokens, "modes": {}}
    outputs = {}
    modes = [("eager", False, "0"), ("static", True, "0"), ("graph", None, "1")]
    for name, static, graphs in modes:
        if name == "graph" and not on_gpu:
            result["modes"][name] = {"status": "skipped", "reason": "no CUDA device"}
            continue
        os.environ["SMOLGRPO_CUDA_GRAPHS"] = graphs
        with warnings.catch_warnings(record=True) as caught, autocast:
            warnings.simplefilter("always")
            if on_gpu:
                torch.cuda.synchronize()
            started = time.perf_counter()
            settings = DecodeSettings(
                pad_token_id=tokenizer.pad_token_id,
                max_new_tokens=args.tokens,
                ignore_eos=True,
                static=static,
            )
            tokens = decode(model, ids, mask, eos, settings).ids
            if on_gpu:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
        outputs[name] = tokens.tolist()
        record = {"status": "done", "seconds": round(seconds, 3)}
        record["tokens_per_s"] = round(tokens.numel() / seconds)
        record["ms_per_token_step"] = round(1000 * seconds / args.tokens, 2)
        messages = [str(w.message) for w in caught if "CUDA graph" in str(w.message)]
        if messages or (name == "graph" and not graph_decode.graphs_enabled()):
            record |= {"status": "failed", "reason": "; ".join(messages) or "graphs disabled"}
        result["modes"][name] = record
    for name, other in (("static", "eager"), ("graph", "eager"), ("graph", "static")):
        if name in outputs and other in outputs:
            pairs = list(zip(outputs[name], outputs[other]))
            firsts = [first_difference(a, b) for a, b in pairs if a != b]
            result[f"{name}_vs_{other}"] = {
                "identical_rows": len(pairs) - len(firsts),
                "rows": len(pairs),
                "median_first_difference": sorted(firsts)[len(firsts) // 2] if firsts else None,
            }
    graph = result["modes"].get("graph", {})
    if graph.get("status") == "done":
        result["speedup_graph_over_eager"] = round(
            result["modes"]["eager"]["seconds"] / graph["seconds"], 2
        )
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
