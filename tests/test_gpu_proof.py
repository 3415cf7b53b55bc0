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

SCRIPT = Path(__file__).parents[1] / "benchmarks/gpu_proof.py"


def test_tiny_gpu_proof_reports_every_part(tmp_path, capsys):
    output = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, str(SCRIPT), "--tiny", "--output-dir", str(output)]
    command += ["--work-dir", str(tmp_path / "work"), "--bandwidth-gbs", "20"]
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
    recipe = parts["recipe"]
    assert recipe["status"] == "done", recipe
    assert recipe["grpo"]["steps_done"] >= 1 and recipe["grpo"]["time_per_step_s"] > 0
    assert recipe["sft"]["status"] in ("done", "skipped")
    assert recipe["eval"]["status"] == "done" and recipe["eval"]["num_problems"] == 4
    with capsys.disabled():
        print(f"\n{table}")
