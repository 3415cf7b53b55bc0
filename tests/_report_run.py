"""A hand-made run directory for the report tests: known numbers, hostile model text.

The metrics follow simple formulas (step-linear rewards, periodic eval every 5 steps) so that the
summary's means can be checked by hand; one completion holds a `<script>` tag and markup to prove
the HTML escapes model text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

REWARD_NAMES = ("correctness", "strict_format", "soft_format", "xml_count")
WEIGHTS = {"correctness": 2.0, "strict_format": 0.5, "soft_format": 0.25, "xml_count": 0.25}
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)> & </pre>'
NUM_GENERATIONS = 4
SAMPLE_STEPS = (1, 10, 20)


def metrics_row(step: int, eval_every: int = 5) -> dict:
    progress = min(1.0, step / 20)
    row = {"step": step}
    for index, name in enumerate(REWARD_NAMES):
        row[f"reward/{name}"] = min(1.0, progress * (index + 1) / 4)
    row["reward_mean"] = sum(WEIGHTS[n] * row[f"reward/{n}"] for n in REWARD_NAMES)
    row.update(
        accuracy=row["reward/correctness"],
        strict_format_rate=row["reward/strict_format"],
        soft_format_rate=row["reward/soft_format"],
        loss=0.1 * math.sin(step),
        kl=0.0,
        clip_fraction=0.01 * (step % 3),
        entropy=2.0 - progress,
        grad_norm=1.0 + 0.5 * math.cos(step),
        learning_rate=1e-5 * min(1.0, step / 3),
        completion_length_mean=max(40.0, 150.0 - 4 * step),
        completion_length_max=max(60, 200 - 2 * step),
        truncation_rate=max(0.0, 0.8 - 0.04 * step),
        frac_zero_std_groups=0.0,
        tokens_per_s=500.0 + step,
    )
    if eval_every and step % eval_every == 0:
        row.update(
            {
                "eval/accuracy": progress / 2,
                "eval/accuracy_last_number": progress / 2 + 0.05,
                "eval/strict_format_rate": progress,
                "eval/soft_format_rate": progress,
                "eval/mean_completion_tokens": max(50.0, 120.0 - step),
                "eval/truncation_rate": 0.5 - progress / 4,
            }
        )
    return row


def sample_records(step: int, num_prompts: int = 2) -> list[dict]:
    records = []
    for prompt in range(num_prompts):
        gold = str(10 + prompt)
        completions = []
        for index in range(NUM_GENERATIONS):
            correct = index == 0
            answer = gold if correct else str(index)
            text = f"<reasoning>\n{gold} - 0 = {gold}\n</reasoning>\n<answer>\n{answer}\n</answer>"
            if index == 1:
                text = "<reasoning>\n" + HOSTILE
            rewards = {name: (1.0 if correct else 0.0) for name in REWARD_NAMES}
            completions.append(
                {
                    "text": text,
                    "total_reward": sum(WEIGHTS[n] * v for n, v in rewards.items()),
                    "rewards": rewards,
                }
            )
        records.append(
            {
                "step": step,
                "origin": f"train:{prompt}",
                "question": f"Q{prompt}: what is {gold} - 0? <b>bold?</b>",
                "gold": gold,
                "completions": completions,
            }
        )
    return records


def write_fake_run(run_dir: Path, steps: int = 20, eval_every: int = 5, final: bool = False):
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "model": {"name": "embedded", "lora": False},
        "data": {"source": None, "train_split": "train"},
        "prompt": {
            "system_prompt": "Answer </pre><script>x()</script>",
            "prefill": "<reasoning>\n",
        },
        "rewards": {"weights": dict(WEIGHTS)},
        "sampling": {"num_generations": NUM_GENERATIONS, "max_completion_length": 200},
        "grpo": {"loss_type": "dapo", "beta": 0.0},
        "optim": {"learning_rate": 1e-5, "max_steps": steps, "prompts_per_step": 2},
        "run": {"output_dir": str(run_dir), "eval_every": eval_every},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rows = [metrics_row(step, eval_every) for step in range(1, steps + 1)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    samples = run_dir / "samples"
    samples.mkdir(exist_ok=True)
    for step in SAMPLE_STEPS:
        if step <= steps:
            lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in sample_records(step))
            (samples / f"step_{step}.jsonl").write_text("".join(lines))
    if final:
        folder = run_dir / "final"
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text('{"model_type": "llama"}\n')
        (folder / "model.safetensors").write_bytes(b"\0" * 2048)
        (folder / "prompt_template.json").write_text('{"prefill": "<reasoning>\\n"}\n')
    return rows


def write_fake_eval(
    eval_dir: Path, accuracy: float = 0.25, model: str = "embedded", measured: Path | None = None
) -> dict:
    """`measured`: a model folder (a run's final/) this eval's eval_config.json says it
    measured, as `smolgrpo eval --model FOLDER` records it."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    if measured is not None:
        from smolgrpo.evaluation.output_folder import EVAL_MARKER, model_identity

        model = str(measured)
        marker = {"smolgrpo_eval": 1, **model_identity(model), "settings": {"model": model}}
        (eval_dir / EVAL_MARKER).write_text(json.dumps(marker))
    metrics = {
        "num_problems": 4,
        "num_samples": 1,
        "accuracy": accuracy,
        "accuracy_last_number": accuracy + 0.25,
        "strict_format_rate": 0.5,
        "soft_format_rate": 0.75,
        "mean_completion_tokens": 42.5,
        "truncation_rate": 0.0,
        "mean_total_reward": 1.0,
        "reward/correctness": accuracy,
        "time_s": 3.2,
        "model": model,
        "split": "test",
    }
    (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (eval_dir / "samples.jsonl").write_text("")
    return metrics
