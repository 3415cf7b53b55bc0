"""benchmarks/gpu_proof.py --tiny: every part runs (or says why not) and both reports are written.

The tiny mode is the GPU proof's plumbing on CPU: a random two-layer model, toy problems, tiny
sizes. Its numbers mean nothing; what is checked is that one command goes through the benchmark,
the memory run, the decode bound, SFT + GRPO + eval, and leaves gpu_proof.json and gpu_proof.md
with a result or a stated reason for every part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks/gpu_proof.py"


def test_tiny_gpu_proof_reports_every_part(tmp_path, capsys):
    output = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, str(SCRIPT), "--tiny", "--output-dir", str(output)]
    command += ["--work-dir", str(tmp_path / "work"), "--bandwidth-gbs", "20", "--eval-sft"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr + (output / "gpu_proof.log").read_text()

    result = json.loads((output / "gpu_proof.json").read_text())
    table = (output / "gpu_proof.md").read_text()
    assert result["finished"] and result["tiny"]
    parts = result["parts"]
    for name, part in parts.items():
        assert part["status"] == "done" or part.get("reason"), (name, part)
        assert f"| {name} |" in table

    bench = parts["benchmark"]
    assert bench["status"] == "done" and bench["smolgrpo"]["steps_per_s"] > 0
    trl = bench["trl"]
    assert trl["status"] == "done" or trl["reason"].endswith("not installed"), trl
    assert bench["trl_vllm"].startswith("not used: ")
    memory = parts["memory"]  # no GPU here: the step ran, the GPU figure is skipped with a reason
    assert memory["steps"] == 2 and memory["status"] == "skipped"
    assert "no GPU" in memory["reason"]
    decode = parts["decode"]
    assert decode["status"] == "done" and decode["decode_tokens_per_s"] > 0
    assert 0 < decode["fraction_of_bound"]  # from --bandwidth-gbs
    graphs = parts["graphs"]  # no CUDA: the static loop against the eager one, no graph
    assert graphs["status"] == "done" and graphs["modes"]["graph"]["status"] == "skipped"
    assert graphs["static_vs_eager"]["identical_rows"] == graphs["rows"] == 4
    assert graphs["decision"] == "nothing to decide without CUDA"
    assert "| graphs | 4 rows x 8 tokens, greedy: eager " in table
    recipe = parts["recipe"]
    assert recipe["status"] == "done", recipe
    assert recipe["grpo"]["steps_done"] >= 1 and recipe["grpo"]["time_per_step_s"] > 0
    assert recipe["sft"]["status"] in ("done", "skipped")
    assert recipe["eval"]["status"] == "done" and recipe["eval"]["num_problems"] == 4
    assert recipe["eval"]["model_stage"] == "grpo" and len(recipe["eval"]["accuracy_ci95"]) == 2
    # --eval-sft: the SFT model's eval ran beside GRPO, into its own folder and record
    assert recipe["sft_eval"]["status"] == "done" and recipe["sft_eval"]["num_problems"] == 4
    assert recipe["sft_eval"]["model_stage"] == "sft"
    assert (tmp_path / "work/sft-eval/metrics.json").is_file()
    assert "SFT model on 4 test problems" in table and "GRPO model on 4 test problems" in table
    with capsys.disabled():
        print(f"\n{table}")


def test_a_run_stopped_by_the_time_limit_hands_on_its_checkpoint(tmp_path, monkeypatch):
    """gpu_proof.trained_model: no final/ (the run got SIGTERM), so the newest checkpoint's
    weights become a model folder that the next stage (GRPO, eval) loads."""
    from conftest import build_char_tokenizer, build_tiny_model
    from transformers import AutoModelForCausalLM

    from smolgrpo.cli import main as cli
    from smolgrpo.rewards import builtin as rewards

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from gpu_proof_recipe import trained_model

    tokenizer = build_char_tokenizer()
    base = tmp_path / "base"
    build_tiny_model(len(tokenizer)).save_pretrained(base, safe_serialization=True)
    tokenizer.save_pretrained(base)
    data = tmp_path / "toy.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"Q{i}", "answer": f"#### {i}"}) + "\n" for i in range(4))
    )
    monkeypatch.setitem(
        rewards.REWARDS,
        "digits",
        rewards.RewardSpec(
            lambda texts, **_: [sum(c.isdigit() for c in t) / max(len(t), 1) for t in texts]
        ),
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "model": {"name": str(base), "device": "cpu"},
                "data": {"source": str(data)},
                "prompt": {"system_prompt": "S", "prefill": ""},
                "rewards": {"weights": {"digits": 1.0}},
                "sampling": {"num_generations": 2, "max_completion_length": 4},
                "optim": {"learning_rate": 1e-2, "max_steps": 2, "prompts_per_step": 2},
                "run": {"save_every": 1},
            }
        )
    )
    run_dir = tmp_path / "run"
    argv = ["train", "--config", str(recipe), "--no-progress", "--output-dir", str(run_dir)]
    assert cli.main(argv) == 0
    (run_dir / "final").rename(tmp_path / "reference")  # as if SIGTERM came before final/

    exported = trained_model(run_dir, base)
    assert exported == run_dir / "step_2-model"
    assert (exported / "prompt_template.json").is_file()
    expected = AutoModelForCausalLM.from_pretrained(tmp_path / "reference").state_dict()
    actual = AutoModelForCausalLM.from_pretrained(exported).state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert trained_model(tmp_path / "never-ran", base) is None


@pytest.mark.parametrize(
    ("graph", "identical", "decision", "env", "reserve"),
    [
        ({"status": "done", "ms_per_token_step": 2.0}, 120, "graphs on", None, 60.0),
        ({"status": "done", "ms_per_token_step": 2.0}, 10, "graphs OFF", "0", 140.0),
        ({"status": "failed", "reason": "capture failed"}, 0, "graphs OFF", "0", 140.0),
        ({"status": "skipped", "reason": "no CUDA device"}, 0, "nothing to decide", None, 60.0),
    ],
)
def test_the_graphs_part_turns_graphs_off_for_the_recipe_when_the_graph_is_wrong(
    tmp_path, monkeypatch, graph, identical, decision, env, reserve
):
    """gpu_proof.graphs: a graph that failed, or that decodes most rows otherwise than the
    static loop it records (a broken capture parts at once), must not be trusted by the later
    parts: they get SMOLGRPO_CUDA_GRAPHS=0 and an eager eval's time reserve."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import gpu_proof

    class FakeProof:
        work_dir = tmp_path
        env: dict = {}
        result = {"parts": {"graphs": {}}}
        args = SimpleNamespace(tiny=False, device="auto", data="data", eval_reserve_s=60.0)

        def left(self):
            return 500.0

        def part(self, name):
            return self.result["parts"][name]

        def write(self):
            pass

        def run(self, name, command, budget_s=None):
            report = {"rows": 128, "tokens": 96, "modes": {"eager": {}, "graph": graph}}
            report["graph_vs_static"] = {"identical_rows": identical, "rows": 128}
            (tmp_path / "graphs.json").write_text(json.dumps(report))
            return {"status": "done"}

    proof = FakeProof()
    gpu_proof.graphs(proof, tmp_path / "model")
    assert proof.part("graphs")["decision"].startswith(decision)
    assert proof.env.get("SMOLGRPO_CUDA_GRAPHS") == env
    assert proof.args.eval_reserve_s == reserve
