"""The GPU proof: every GPU figure the README lacks, from one command, within a time limit.

    python benchmarks/gpu_proof.py --output-dir OUT [--time-limit-s 540] [--model FILE.gguf]
    python benchmarks/gpu_proof.py --output-dir OUT --tiny      # the same parts on CPU, tiny model

Parts, in this order (each a subprocess given what is left of the time as its timeout):
1. benchmark: `grpo_vs_trl.py`'s smolgrpo and TRL sides at the real recipe's sizes (its `gpu`
   preset), TRL at its best single-GPU settings; "skipped: trl not installed" without trl;
2. memory: a few steps of `recipes/smollm2-135m-gsm8k.yaml` through `smolgrpo train`, its peak
   `torch.cuda.max_memory_allocated` against the recipe's 8 GB promise, and its time per step;
3. decode: smolgrpo's decode tokens/s (from part 1) and its fraction of the memory-bandwidth bound
   (every decode step reads all weights once, in bf16) from the card's bandwidth;
4. graphs (gpu_proof_graphs.py): the CUDA-graph decode against the eager loop on the same 128
   rows (speed, and rows decoded alike); if the graph fails, the later parts decode eagerly;
5. recipe (gpu_proof_recipe.py): `smolgrpo sft`, then `smolgrpo train` from its model until its
   `run.time_limit_s` (the time left minus --eval-reserve-s), then `smolgrpo eval` on the 1,319
   test problems (as many as fit); --eval-sft also evaluates the SFT model, beside GRPO.
After each part `gpu_proof.json` and `gpu_proof.md` are rewritten in --output-dir, so a run cut
off by its caller still leaves what it measured. Past --time-limit-s a running part gets SIGTERM
(smolgrpo checkpoints and exits within run.stop_grace_s), the files are written, and the exit
status is 0. Big files (models, checkpoints) go to --work-dir, not to --output-dir.

`--tiny` builds a random two-layer model with a character tokenizer and toy problems, and runs
every part with tiny sizes on CPU: a check of the plumbing in a few minutes, not a measurement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
import grpo_vs_trl  # noqa: E402  (the benchmark this script runs, next to it)
from gpu_proof_recipe import (  # noqa: E402
    RECIPE,
    STOP_MARGIN_S,
    TINY_BENCH,
    read_rows,
    recipe,
    tiny_train,
)
from gpu_proof_support import (  # noqa: E402
    PARTS,
    PROMISE_MB,
    Proof,
    build_tiny_model,
    write_toy_data,
)


# ----------------------------------------------------------------------------- the parts
def benchmark(proof: Proof, model_dir: Path) -> None:
    settings = dict(grpo_vs_trl.PRESETS["cpu" if proof.args.tiny else "gpu"])
    settings |= TINY_BENCH | {"device": proof.args.device} if proof.args.tiny else {}
    part = proof.part("benchmark")
    part.update(workload={**settings, **grpo_vs_trl.COMMON}, forced_length=True)
    part["trl_vllm"] = (
        "not used: vllm is not installed (its wheels and the torch build they pin are far over "
        "the 64 MiB a device call carries)"
        if importlib.util.find_spec("vllm") is None
        else "not used: vllm is installed, but grpo_vs_trl.run_trl does not switch it on yet"
    )
    share = {"smolgrpo": 0.25, "trl": 0.4}  # of the time left; TRL's generate is the slow one
    for side in ("smolgrpo", "trl"):
        missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
        if side == "trl" and missing:
            part["trl"] = {"status": "skipped", "reason": f"{' and '.join(missing)} not installed"}
            continue
        output = proof.work_dir / f"benchmark-{side}.json"
        command = [sys.executable, __file__, "--bench-side", side, "--bench-output", str(output)]
        command += ["--bench-settings", json.dumps(settings), "--model", str(model_dir)]
        record = proof.run(f"benchmark ({side})", command, budget_s=proof.left() * share[side])
        if record["status"] == "done":
            record |= json.loads(output.read_text())
            proof.result.setdefault("device", record["device"])
        part[side] = record
        proof.write()
    ours = part["smolgrpo"]
    part["status"] = ours["status"]
    if ours["status"] != "done":
        part["reason"] = f"smolgrpo side {ours['status']}: {ours.get('reason')}"
    proof.write()


def memory(proof: Proof, model_dir: Path) -> None:
    steps = 2 if proof.args.tiny else 3
    run_dir = proof.work_dir / "memory-run"
    command = proof.cli("train", "--config", str(RECIPE), "--overwrite", "--no-progress")
    overrides = [f"model.name={model_dir}", f"optim.max_steps={steps}", "run.eval_every=0"]
    overrides += tiny_train(proof.args)
    command += ["--output-dir", str(run_dir)] + [a for o in overrides for a in ("--set", o)]
    record = proof.run("memory", command, budget_s=proof.left() * 0.3)
    rows = read_rows(run_dir / "metrics.jsonl")
    record["steps"] = len(rows)
    record["step_time_s"] = [round(row["step_time_s"], 2) for row in rows]
    peaks = [row["peak_memory_mb"] for row in rows if "peak_memory_mb" in row]
    if record["status"] == "done" and not peaks:
        record |= {
            "status": "skipped",
            "reason": "no GPU: the step ran on CPU, where "
            "torch.cuda.max_memory_allocated does not exist",
        }
    if peaks:
        record |= {"peak_memory_mb": round(max(peaks)), "promise_mb": PROMISE_MB}
        record["fits_promise"] = max(peaks) < PROMISE_MB
    proof.part("memory").update(record)
    proof.write()


def decode(proof: Proof, model_dir: Path) -> None:
    ours = proof.part("benchmark").get("smolgrpo", {})
    if ours.get("status") != "done":
        return proof.skip("decode", "needs the benchmark's smolgrpo side, which did not finish")
    workload = proof.part("benchmark")["workload"]
    rows = workload["num_generations"] * workload["prompts_per_step"]
    part = proof.part("decode")
    part.update(status="done", device=ours["device"], rows=rows)
    # Forced length: every row generates exactly max_completion_length tokens; the prefill is
    # inside generation_s, so this is a lower bound on the decode speed.
    part["decode_tokens_per_s"] = rows * workload["max_completion_length"] / ours["generation_s"]
    part["parameters"] = count_weights(model_dir)
    grpo_vs_trl.PARAMETERS = part["parameters"]  # the bound reads every weight of this model
    table = {"device": ours["device"], "workload": workload, "smolgrpo": ours}
    bound = grpo_vs_trl.bandwidth_bound(table, proof.args.bandwidth_gbs)
    if bound is None:
        part["fraction_of_bound"] = None
        part["reason"] = f"bound not computed: memory bandwidth of '{ours['device']}' unknown "
        part["reason"] += "(pass --bandwidth-gbs)"
    else:
        part.update(bound)
        part["bound_decode_tokens_per_s"] = bound["bound_decode_steps_per_s"] * rows
    proof.write()


def graphs(proof: Proof, model_dir: Path) -> None:
    """gpu_proof_graphs.py: the CUDA-graph decode against the eager loop on the same rows; if
    the graph fails or decodes otherwise than the static loop it records, the later parts run
    with SMOLGRPO_CUDA_GRAPHS=0."""
    output = proof.work_dir / "graphs.json"
    command = [sys.executable, str(BENCHMARKS / "gpu_proof_graphs.py"), "--output", str(output)]
    command += ["--model", str(model_dir), "--data", proof.args.data]
    command += ["--rows", "4", "--tokens", "8"] if proof.args.tiny else []
    command += ["--device", "cpu" if proof.args.device == "cpu" else "cuda"]
    record = proof.run("graphs", command, budget_s=min(150.0, proof.left() * 0.25))
    if record["status"] == "done":
        record |= json.loads(output.read_text())
    graph = record.get("modes", {}).get("graph", {})
    same = record.get("graph_vs_static", {})
    if graph.get("status") == "skipped":
        record["decision"] = "nothing to decide without CUDA"
    elif graph.get("status") == "done" and same.get("identical_rows", 0) * 2 >= same["rows"]:
        record["decision"] = "graphs on for the later parts"
    else:
        proof.env["SMOLGRPO_CUDA_GRAPHS"] = "0"  # a broken graph must not cost the recipe
        # an eager eval of 1,319 problems took 117-132 s on an H200 (2026-11-28)
        proof.args.eval_reserve_s = max(proof.args.eval_reserve_s, 140.0)
        record["decision"] = "graphs OFF for the later parts (SMOLGRPO_CUDA_GRAPHS=0)"
    proof.part("graphs").update(record)
    proof.write()


def count_weights(model_dir: Path) -> int:
    """Parameters stored in the folder's safetensors (a tied embedding counts once)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            total += sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys())
    return total


# ----------------------------------------------------------------------------- set-up
def prepare_model(args, work_dir: Path) -> Path:
    """A save_pretrained folder every part loads: tiny and random, or the real model."""
    from smolgrpo.models.loading import embedded_model_dir, load_model_and_tokenizer

    if args.tiny:
        return build_tiny_model(work_dir / "tiny-model")
    if args.model == "embedded":
        return embedded_model_dir()
    path = Path(args.model)
    if path.is_dir():
        return path
    target = work_dir / f"{path.stem}-float"  # a .gguf, de-quantized once
    if not (target / "model.safetensors").is_file():
        model, tokenizer = load_model_and_tokenizer(str(path), device="cpu")
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
    return target


# ----------------------------------------------------------------------------- entry points
def bench_side(args) -> None:
    """Child process: one side of grpo_vs_trl.py on the prepared model folder."""
    import smolgrpo.models.loading

    settings = json.loads(args.bench_settings)
    smolgrpo.models.loading.embedded_model_dir = lambda: Path(args.model)  # the workload's model
    run = grpo_vs_trl.run_smolgrpo if args.bench_side == "smolgrpo" else grpo_vs_trl.run_trl
    result = run(settings, True)
    result["peak_memory_mb"] = grpo_vs_trl.peak_memory_mb(settings["device"])
    result["device"] = grpo_vs_trl.device_name(settings["device"])
    Path(args.bench_output).write_text(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=False, help="gpu_proof.json/.md/.log go here")
    parser.add_argument("--work-dir", default=None, help="models and runs (default: a temp dir)")
    parser.add_argument("--time-limit-s", type=float, default=540.0, help="(default: 540)")
    parser.add_argument("--tiny", action="store_true", help="tiny random model (on --device)")
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda (default: cpu with --tiny, else auto)"
    )
    parser.add_argument(
        "--eval-batch-size", type=int, default=256, help="test problems per eval batch (256)"
    )
    parser.add_argument(
        "--eval-sft",
        action="store_true",
        help="also evaluate the SFT model on the test split, beside GRPO",
    )
    parser.add_argument(
        "--eval-reserve-s",
        type=float,
        default=120.0,
        help="seconds GRPO leaves for the test-set eval (default: 120)",
    )
    parser.add_argument(
        "--model", default="embedded", help="embedded, a .gguf file or a model folder"
    )
    parser.add_argument("--data", default=None, help="GSM8K folder (default: $SMOLGRPO_DATA_DIR)")
    parser.add_argument("--bandwidth-gbs", type=float, default=None, help="GPU memory bandwidth")
    parser.add_argument("--parts", default=",".join(PARTS), help="(default: all)")
    for hidden in ("--bench-side", "--bench-output", "--bench-settings"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bench_side:
        bench_side(args)
        return 0
    if not args.output_dir:
        parser.error("--output-dir is required")
    args.device = args.device or ("cpu" if args.tiny else "auto")
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="gpu-proof-")
    if args.tiny:
        args.data = str(write_toy_data(Path(args.work_dir) / "toy-data"))
    args.data = args.data or os.environ.get("SMOLGRPO_DATA_DIR") or "openai/gsm8k"
    if Path(args.data).exists():  # the parts run from the repository root
        args.data = str(Path(args.data).resolve())
    proof = Proof(args)
    proof.write()
    model_dir = prepare_model(args, Path(args.work_dir))
    proof.result["model"] = str(model_dir)
    import torch

    on_gpu = args.device != "cpu" and torch.cuda.is_available()
    proof.result.setdefault("device", grpo_vs_trl.device_name("cuda" if on_gpu else "cpu"))
    wanted = set(args.parts.split(","))
    for name, run in zip(PARTS, (benchmark, memory, decode, graphs, recipe)):
        if name not in wanted:
            proof.skip(name, "not asked for (--parts)")
        elif name != "decode" and proof.left() < STOP_MARGIN_S + 5:  # decode: no run, arithmetic
            proof.skip(name, f"time limit reached ({args.time_limit_s:g} s)")
        else:
            try:
                run(proof, model_dir)
            except Exception as error:  # one broken part must not lose the others' figures
                proof.part(name).update(status="failed", reason=f"{type(error).__name__}: {error}")
                proof.write()
    proof.result["finished"] = True
    proof.write()
    print((proof.output_dir / "gpu_proof.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
