"""The SFT -> GRPO -> eval chains of the recipes run as written, shrunk with --set on CPU.

The GPU chain (recipes/smollm2-135m-gsm8k-sft.yaml then smollm2-135m-gsm8k.yaml) and the CPU
chain (cpu-sft.yaml then cpu-grpo.yaml) each start from a tiny random model saved to a folder,
so CI (which has no GPU) checks that every key of the recipes is accepted and that each stage
takes the previous stage's final/ folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.cli.main import main

RECIPES = Path(__file__).parents[1] / "recipes"
CHAINS = {
    "gpu": ("smollm2-135m-gsm8k-sft.yaml", "smollm2-135m-gsm8k.yaml"),
    "cpu": ("cpu-sft.yaml", "cpu-grpo.yaml"),
}


def write_toy_data(folder: Path) -> None:
    folder.mkdir()
    for split, numbers in (("train", range(6)), ("test", range(6, 9))):
        (folder / f"{split}.jsonl").write_text(
            "".join(
                json.dumps(
                    {"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}\n#### {2 * i}"}
                )
                + "\n"
                for i in numbers
            )
        )


def sets(*pairs: str) -> list[str]:
    return [item for pair in pairs for item in ("--set", pair)]


@pytest.mark.parametrize("chain", list(CHAINS))
def test_recipe_chain_runs_on_cpu_with_overrides(chain, tmp_path):
    sft_recipe, grpo_recipe = (str(RECIPES / name) for name in CHAINS[chain])
    tokenizer = build_char_tokenizer()
    base = tmp_path / "base"
    build_tiny_model(len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    data = tmp_path / "data"
    write_toy_data(data)
    small = ("model.device=cpu", f"data.source={data}", "prompt.system_prompt=Solve it.")
    code = main(
        ["sft", "--config", sft_recipe, "--no-progress", "--output-dir", str(tmp_path / "sft")]
        + sets(
            *small,
            f"model.name={base}",
            "optim.max_steps=2",
            "optim.prompts_per_step=2",
            "optim.micro_batch_size=2",
            "sft.max_length=128",
        )
    )
    assert code == 0
    sft_final = tmp_path / "sft" / "final"
    assert (sft_final / "model.safetensors").is_file()
    assert "Supervised warm start" in (sft_final / "README.md").read_text()
    code = main(
        ["train", "--config", grpo_recipe, "--no-progress", "--output-dir", str(tmp_path / "grpo")]
        + sets(
            *small,
            f"model.name={sft_final}",
            "optim.max_steps=1",
            "optim.prompts_per_step=1",
            "sampling.num_generations=2",
            "sampling.max_completion_length=4",
        )
    )
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "grpo/metrics.jsonl").read_text().splitlines()]
    assert "reward/grounded_arithmetic" in rows[0]
    code = main(
        [
            "eval",
            "--model",
            str(tmp_path / "grpo" / "final"),
            "--data",
            str(data),
            "--limit",
            "2",
            "--max-new-tokens",
            "4",
            "--no-progress",
            "--output-dir",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert metrics["num_problems"] == 2 and len(metrics["accuracy_ci95"]) == 2
