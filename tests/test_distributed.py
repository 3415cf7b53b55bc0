"""Two CPU processes with gloo, launched as torchrun would: ranks stay in lock-step.

Each rank samples with its own seed (seed + rank), so the ranks' local gradients differ; after
the all-reduce every rank must hold exactly the same weights, and a stopped-and-resumed run must
end where the uninterrupted one does (each rank gets its own RNG back from the checkpoint).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from smolgrpo.runs.metrics_log import read_metrics

WORKER = Path(__file__).parent / "_distributed_worker.py"
TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(out: Path, scenario: str, world_size: int = 2) -> None:
    port = free_port()
    processes = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "CUDA_VISIBLE_DEVICES": "",  # gloo on CPU even where a GPU exists
            "OMP_NUM_THREADS": "1",
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(out), scenario],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=TIMEOUT_S)
            outputs.append(output)
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        logs = [process.communicate()[0] for process in processes]
        pytest.fail(f"ranks hung for {TIMEOUT_S}s:\n" + "\n".join(log[-3000:] for log in logs))
    for rank, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"rank {rank} failed:\n{output[-5000:]}"


def assert_same(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_two_ranks_stay_identical_and_resume_exactly(tmp_path):
    launch(tmp_path, "train")
    initial = load_file(tmp_path / "initial.safetensors")
    a0, a1 = (load_file(tmp_path / f"a_rank{r}.safetensors") for r in (0, 1))
    assert_same(a0, a1)
    assert any(not torch.equal(initial[name], a0[name]) for name in initial), "no update"

    rows = read_metrics(tmp_path / "a/metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert row["groups_generated"] == 4 and row["groups_trained"] == 4
    samples = (tmp_path / "a/samples/step_1.jsonl").read_text().splitlines()
    assert len(samples) == 2  # log_num_prompts, from rank 0
    assert (tmp_path / "a/final/model.safetensors").is_file()
    assert [p.name for p in sorted((tmp_path / "a/checkpoints").iterdir())] == ["step_2", "step_3"]

    b0, b1 = (load_file(tmp_path / f"b_rank{r}.safetensors") for r in (0, 1))
    assert_same(b0, b1)
    assert_same(a0, b0)  # stopped after step 1 and resumed == uninterrupted
    rows_b = read_metrics(tmp_path / "b/metrics.jsonl")
    assert [row["step"] for row in rows_b] == [1, 2, 3]
    for row_a, row_b in zip(rows, rows_b):
        assert row_a["reward_mean"] == row_b["reward_mean"]


def test_rank_without_informative_groups_joins_the_update(tmp_path):
    launch(tmp_path, "filter")
    f0, f1 = (load_file(tmp_path / f"filter_rank{r}.safetensors") for r in (0, 1))
    assert_same(f0, f1)
    rows = read_metrics(tmp_path / "filter/metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["groups_generated"] == 2
        assert row["groups_trained"] <= 1
        assert row["frac_zero_std_groups"] >= 0.5
    assert any(row["groups_trained"] == 1 for row in rows)


def test_fsdp_matches_plain_training_and_resumes(tmp_path):
    """FSDP2 (2 ranks, gloo): same weights as the unsharded run, exact resume, usable final/."""
    launch(tmp_path, "fsdp")
    initial = load_file(tmp_path / "fsdp_initial.safetensors")
    p0, p1 = (load_file(tmp_path / f"p_rank{r}.safetensors") for r in (0, 1))
    f0, f1 = (load_file(tmp_path / f"f_rank{r}.safetensors") for r in (0, 1))
    assert_same(p0, p1)
    assert_same(f0, f1)
    assert any(not torch.equal(initial[name], f0[name]) for name in initial), "no update"
    # Gradients are summed by FSDP's reduce-scatter instead of one all-reduce: same update up
    # to the order of float additions.
    assert f0.keys() == p0.keys()
    for name in f0:
        torch.testing.assert_close(f0[name], p0[name], rtol=1e-4, atol=1e-5, msg=name)

    rows = read_metrics(tmp_path / "f/metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert all(row["groups_trained"] == 4 for row in rows)
    assert "eval/accuracy" in rows[1] and "eval/accuracy" not in rows[0]
    for row_p, row_f in zip(read_metrics(tmp_path / "p/metrics.jsonl"), rows):
        assert row_p["reward_mean"] == row_f["reward_mean"]  # same completions were sampled
        # Adam hides a constant gradient scale from the weights: the norm shows it (sum, not mean).
        assert row_f["grad_norm"] == pytest.approx(row_p["grad_norm"], rel=1e-4)
        assert row_f["loss"] == pytest.approx(row_p["loss"], rel=1e-4, abs=1e-7)

    # Checkpoints hold the full state in the unsharded format.
    for file in ("model.safetensors", "optimizer.safetensors"):
        plain = load_file(tmp_path / "p/checkpoints/step_3" / file)
        sharded = load_file(tmp_path / "f/checkpoints/step_3" / file)
        assert plain.keys() == sharded.keys(), file
        for name in plain:
            torch.testing.assert_close(sharded[name], plain[name], rtol=1e-3, atol=1e-5)
    assert_same(load_file(tmp_path / "f/checkpoints/step_3/model.safetensors"), f0)

    g0, g1 = (load_file(tmp_path / f"g_rank{r}.safetensors") for r in (0, 1))
    assert_same(g0, g1)
    for name in f0:  # stopped after step 1 and resumed under FSDP == uninterrupted
        torch.testing.assert_close(g0[name], f0[name], rtol=0, atol=1e-6, msg=name)

    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(tmp_path / "f/final")
    assert final.config.architectures == ["LlamaForCausalLM"]
    loaded = dict(final.named_parameters())
    assert loaded.keys() == f0.keys()
    for name in f0:
        assert torch.equal(loaded[name].detach(), f0[name]), name


def test_fsdp_refuses_dynamic_sampling_and_uneven_prompts(capsys):
    from smolgrpo.config.loading import load_config
    from smolgrpo.errors import SmolGRPOError
    from smolgrpo.models import fsdp

    with pytest.raises(SmolGRPOError, match="model.fsdp cannot be combined with grpo.filter"):
        load_config(None, ["model.fsdp=true", "grpo.filter_zero_std_groups=true"])
    with pytest.raises(SmolGRPOError, match="model.fsdp cannot be combined with model.lora"):
        load_config(None, ["model.fsdp=true", "model.lora=true"])
    config = load_config(None, ["model.fsdp=true", "optim.prompts_per_step=4"])
    with pytest.raises(SmolGRPOError, match=r"prompts_per_step \(4\) divisible .* \(3\)"):
        fsdp.enabled(config, world_size=3, is_main=True)
    assert fsdp.enabled(config, world_size=2, is_main=True)
    assert not fsdp.enabled(load_config(None, []), world_size=2, is_main=True)
    assert not fsdp.enabled(config, world_size=1, is_main=True)  # one process: ignored, warned
    assert "warning: model.fsdp ignored" in capsys.readouterr().err
