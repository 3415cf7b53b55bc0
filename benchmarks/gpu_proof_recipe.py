"""gpu_proof.py's recipe part: SFT, then GRPO from its model, then the test-set eval, each
bounded by the time the proof has left (`run.time_limit_s` inside each run, SIGTERM past it).
Also the recipe files and the --tiny sizes that gpu_proof.py's other parts share."""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

from gpu_proof_support import PROMISE_MB, STOP_MARGIN_S, Proof

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/smollm2-135m-gsm8k.yaml"
SFT_RECIPES = [ROOT / "recipes/smollm2-135m-gsm8k-sft.yaml", ROOT / "recipes/cpu-sft.yaml"]
TEST_PROBLEMS = 1319
# --tiny: every part at toy sizes on CPU.
TINY_BENCH = {"max_completion_length": 16, "timed_steps": 1}  # on --device
TINY_TRAIN = [
    "model.device=cpu",
    "sampling.num_generations=2",
    "sampling.max_completion_length=16",
    "optim.prompts_per_step=2",
    "optim.micro_batch_size=4",
    "optim.warmup_steps=0",
]
TINY_SFT = ["model.device=cpu", "optim.prompts_per_step=2", "optim.micro_batch_size=2"]
TINY_SFT += ["optim.max_steps=2", "optim.warmup_steps=0", "sft.max_length=2048"]
STARTUP_S = 20  # a stage's process start, model load and final save


def tiny_train(args) -> list[str]:
    """--tiny's GRPO sizes, on --device (cpu unless asked: `--tiny --device cuda` is a quick
    check of the CUDA paths before a real run)."""
    return [o.replace("=cpu", f"={args.device}") for o in TINY_TRAIN] if args.tiny else []


def tiny_sft(args) -> list[str]:
    return [o.replace("=cpu", f"={args.device}") for o in TINY_SFT] if args.tiny else []


# ----------------------------------------------------------------------------- the stages


def recipe(proof: Proof, model_dir: Path) -> None:
    """SFT, then GRPO from its model, then eval: each given what it fits in the time left."""
    part = proof.part("recipe")
    part["status"] = "running"
    start_model = recipe_sft(proof, model_dir)
    sft_eval = None
    if proof.args.eval_sft and start_model != model_dir:
        # The SFT model's eval runs beside GRPO (decoding is launch-bound: the GPU has room);
        # it slows GRPO, whose time limit then fits fewer steps, but gives GRPO's baseline.
        budget = proof.left() - proof.args.eval_reserve_s  # not the last eval's reserve
        results: list[dict] = []
        sft_eval = threading.Thread(
            target=lambda: results.append(eval_stage(proof, start_model, "sft-eval", budget))
        )
        sft_eval.start()
    grpo_model = recipe_grpo(proof, start_model, model_dir)
    if sft_eval is not None:
        sft_eval.join()
        part["sft_eval"] = results[0] if results else {"status": "failed", "reason": "crashed"}
        part["sft_eval"]["model_stage"] = "sft"
    # No GRPO model (no step finished in time): the SFT model still gets its figure.
    if grpo_model is not None or sft_eval is None:
        fallback = start_model if start_model != model_dir else None
        recipe_eval(proof, grpo_model or fallback, "grpo" if grpo_model else "sft")
    stages = [k for k in ("sft", "grpo", "sft_eval", "eval") if k in part]
    unfinished = [k for k in stages if part[k]["status"] not in ("done", "skipped")]
    part["status"] = "partial" if unfinished else "done"
    if unfinished:
        part["reason"] = "; ".join(f"{k}: {part[k].get('reason')}" for k in unfinished)
    proof.write()


def recipe_sft(proof: Proof, model_dir: Path) -> Path:
    """`smolgrpo sft` with at most 45% of the time left; the model GRPO starts from."""
    part = proof.part("recipe")
    sft_recipe = next((p for p in SFT_RECIPES if p.is_file()), None)
    has_sft = importlib.util.find_spec("smolgrpo.training.sft") is not None
    if not has_sft or sft_recipe is None:
        why = "smolgrpo sft is not available" if not has_sft else "no SFT recipe"
        part["sft"] = {"status": "skipped", "reason": why}
        proof.write()
        return model_dir
    run_dir = proof.work_dir / "sft-run"
    command = proof.cli("sft", "--config", str(sft_recipe), "--overwrite", "--no-progress")
    overrides = [f"model.name={model_dir}", "model.device=auto", "run.eval_every=0"]
    overrides += tiny_sft(proof.args)
    command += ["--output-dir", str(run_dir)] + [a for o in overrides for a in ("--set", o)]
    budget = proof.left() * 0.45
    command += ["--set", f"run.time_limit_s={max(budget - STARTUP_S, 1):.0f}"]
    record = proof.run("recipe: sft", command, budget_s=budget + STOP_MARGIN_S)
    rows = read_rows(run_dir / "metrics.jsonl")
    record.update(recipe=sft_recipe.name, steps_done=len(rows), **run_figures(rows))
    record["recipe_steps"] = recipe_steps(sft_recipe, tiny_sft(proof.args))
    trained = trained_model(run_dir, model_dir)
    record["model"] = str(trained) if trained else "none: GRPO starts from the base model"
    part["sft"] = record
    proof.write()
    return trained or model_dir


def recipe_grpo(proof: Proof, start_model: Path, base_dir: Path) -> Path | None:
    """GRPO for the recipe's steps, or as many as fit before the eval's reserve
    (run.time_limit_s: the run ends after the step that leaves too little time for another)."""
    tiny = proof.args.tiny
    total = recipe_steps(RECIPE, tiny_train(proof.args))
    planned = min(total, 3) if tiny else total
    budget = proof.left() - proof.args.eval_reserve_s - STOP_MARGIN_S
    time_limit = max(budget - STARTUP_S, 1)
    run_dir = proof.work_dir / "grpo-run"
    command = proof.cli("train", "--config", str(RECIPE), "--overwrite", "--no-progress")
    overrides = [f"model.name={start_model}", f"optim.max_steps={planned}", "run.eval_every=0"]
    overrides += tiny_train(proof.args) + [f"run.time_limit_s={time_limit:.0f}"]
    command += ["--output-dir", str(run_dir)] + [a for o in overrides for a in ("--set", o)]
    record = proof.run("recipe: grpo", command, budget_s=budget + STOP_MARGIN_S)
    rows = read_rows(run_dir / "metrics.jsonl")
    record.update(steps_planned=planned, recipe_steps=total, steps_done=len(rows))
    record["time_limit_s"] = round(time_limit)
    record["note"] = "periodic eval off (run.eval_every=0): the test-set eval replaces it"
    record |= run_figures(rows)
    if rows:
        record["time_per_step_s"] = record["mean_step_s"]
        for key in ("reward_mean", "accuracy", "strict_format_rate", "completion_length_mean"):
            record[f"last_{key}"] = rows[-1].get(key)
    trained = trained_model(run_dir, base_dir)
    record["model"] = str(trained) if trained else None
    proof.part("recipe")["grpo"] = record
    proof.write()
    return trained


def run_figures(rows: list[dict]) -> dict:
    """Mean step time and, on a GPU, the peak memory allocated, from a run's metrics rows."""
    if not rows:
        return {}
    figures = {"mean_step_s": round(sum(r["step_time_s"] for r in rows) / len(rows), 2)}
    peaks = [row["peak_memory_mb"] for row in rows if "peak_memory_mb" in row]
    if peaks:
        figures |= {"peak_memory_mb": round(max(peaks)), "fits_promise": max(peaks) < PROMISE_MB}
    return figures


def recipe_eval(proof: Proof, model: Path | None, stage: str = "grpo") -> None:
    """Greedy eval of the GRPO model (`stage` "sft": the SFT one) on all 1,319 test problems,
    or as many as fit."""
    part = proof.part("recipe")
    if model is None:
        part["eval"] = {"status": "skipped", "reason": "no trained model (no step finished)"}
    else:
        part["eval"] = eval_stage(proof, model, "eval") | {"model_stage": stage}
    proof.write()


def eval_stage(proof: Proof, model: Path, name: str, budget_s: float | None = None) -> dict:
    """`smolgrpo eval` of `model` into work_dir/`name`; its record (no shared state touched:
    it also runs in a thread beside GRPO)."""
    limit = 4 if proof.args.tiny else TEST_PROBLEMS
    batch_size = 4 if proof.args.tiny else proof.args.eval_batch_size
    batch_s = eval_batch_s(proof, batch_size)
    if batch_s and not proof.args.tiny:
        batches = int((proof.left() - STOP_MARGIN_S - STARTUP_S) / batch_s)
        limit = max(1, min(limit, batches * batch_size))
    eval_dir = proof.work_dir / name
    command = proof.cli("eval", "--model", str(model), "--split", "test", "--no-progress")
    command += ["--limit", str(limit), "--output-dir", str(eval_dir)]
    command += ["--batch-size", str(batch_size)]
    command += ["--max-new-tokens", "16"] if proof.args.tiny else []
    if proof.args.device != "cpu" or not proof.args.tiny:
        command += ["--device", proof.args.device]
    record = proof.run(f"recipe: {name}", command, budget_s=budget_s)
    record["problems_planned"] = limit
    if (eval_dir / "metrics.json").is_file():
        metrics = json.loads((eval_dir / "metrics.json").read_text())
        keys = ("num_problems", "accuracy", "accuracy_last_number", "strict_format_rate")
        keys += ("accuracy_ci95", "strict_format_rate_ci95", "truncation_rate", "time_s")
        record |= {k: metrics.get(k) for k in keys}
    return record


def recipe_steps(path: Path, overrides: list[str]) -> int:
    from smolgrpo.config.loading import load_config

    return load_config(path, overrides).optim.max_steps


def trained_model(run_dir: Path, base_dir: Path) -> Path | None:
    """The run's final/, else a model folder made from its newest good checkpoint (a run
    stopped by the time limit), else None."""
    if (run_dir / "final").is_dir():
        return run_dir / "final"
    from smolgrpo.runs.checkpoint import latest_good_checkpoint

    checkpoint = latest_good_checkpoint(run_dir) if run_dir.is_dir() else None
    if checkpoint is None:
        return None
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    weights = load_file(checkpoint / "model.safetensors")
    if set(weights) - set(model.state_dict()):  # LoRA adapters: not a full model
        return None
    model.load_state_dict(weights, strict=False)  # a tied head is saved once, as embeddings
    target = run_dir / f"{checkpoint.name}-model"
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(target)
    if (run_dir / "prompt_template.json").is_file():  # eval prompts it as it was trained
        shutil.copy(run_dir / "prompt_template.json", target)
    return target


def eval_batch_s(proof: Proof, batch_size: int = 128) -> float | None:
    """Seconds for one greedy eval batch (`batch_size` problems, up to 256 tokens), from part
    3's decode speed (one decode step serves the whole batch, so the batch size barely
    matters while decoding is launch-bound); None without it."""
    decode_part = proof.part("decode")
    rate = decode_part.get("decode_tokens_per_s")
    if not rate:
        return None
    return 256 / (rate / decode_part["rows"]) * 1.5  # 1.5: prefill, scoring, a slower batch


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    from smolgrpo.runs.metrics_log import read_metrics

    return read_metrics(path)
