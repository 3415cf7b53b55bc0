"""One rank of the 2-process gloo tests in test_distributed.py (launched with RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT and LOCAL_RANK set, as torchrun would).

    python _distributed_worker.py OUT_DIR SCENARIO

Scenarios:
  train   run A: 3 steps uninterrupted; run B: stopped after step 1, then resumed to step 3.
          Writes OUT_DIR/initial.safetensors (rank 0) and OUT_DIR/{a,b}_rank{r}.safetensors.
  filter  dynamic sampling where one rank keeps a group and the other none (must not hang).
          Writes OUT_DIR/filter_rank{r}.safetensors.
  fsdp    run p: 3 plain steps; run f: the same with model.fsdp; run g: FSDP stopped after
          step 1, then resumed to step 3 (all with an evaluation at step 2). Writes
          OUT_DIR/fsdp_initial.safetensors (rank 0) and OUT_DIR/{p,f,g}_rank{r}.safetensors, the
          full parameters as each rank sees them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import build_char_tokenizer, build_tiny_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from smolgrpo.config.loading import load_config  # noqa: E402
from smolgrpo.models import distributed as dist_utils  # noqa: E402
from smolgrpo.rewards import builtin as rewards  # noqa: E402
from smolgrpo.tasks.data import Problem  # noqa: E402
from smolgrpo.training.trainer import Trainer  # noqa: E402


def digits_reward(completions, answers, **fields):
    """Fraction of digit characters; constant 0.5 for problems whose gold is 'c'."""
    return [
        0.5 if gold == "c" else (sum(c.isdigit() for c in text) / len(text) if text else 0.0)
        for text, gold in zip(completions, answers)
    ]


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().contiguous() for name, p in model.named_parameters()}


def full_parameters(trainer) -> dict[str, torch.Tensor]:
    """The unsharded parameters on every rank (gathered from the shards under FSDP)."""
    if not trainer.sharded:
        return parameters(trainer.model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True))
    return {name: full[name].clone().contiguous() for name, _ in trainer.model.named_parameters()}


def make_trainer(
    out: Path,
    name: str,
    overrides: list[str],
    resume: bool,
    items: list[Problem],
    eval_items: list[Problem] | None = None,
):
    config = load_config(
        None,
        [
            f"run.output_dir={out / name}",
            "run.save_every=1",
            "run.log_samples_every=1",
            "sampling.num_generations=4",
            "sampling.max_completion_length=6",
            "optim.prompts_per_step=4",
            "optim.micro_batch_size=3",
            "optim.learning_rate=1e-2",
            "optim.warmup_steps=0",
            "optim.max_steps=3",
            "prompt.system_prompt=S",
            "prompt.prefill=''",
            "rewards.weights={digits: 1.0}",
            *overrides,
        ],
    )
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer), seed=0)
    return Trainer(
        config,
        resume=resume,
        overwrite=not resume,
        show_progress=False,
        model=model,
        tokenizer=tokenizer,
        train_problems=items,
        eval_problems=eval_items,
    )


def main() -> None:
    out, scenario = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    rewards.REWARDS["digits"] = rewards.RewardSpec(digits_reward)
    rank = int(os.environ["RANK"])
    if scenario == "train":
        items = [Problem(f"Q{i}", f"#### {i}", str(i), f"toy:{i}") for i in range(8)]
        run_a = make_trainer(out, "a", [], False, items)
        assert (run_a.rank, run_a.world_size) == (rank, 2)
        if rank == 0:
            save_file(parameters(run_a.model), out / "initial.safetensors")
        run_a.train()
        save_file(parameters(run_a.model), out / f"a_rank{rank}.safetensors")

        run_b = make_trainer(out, "b", [], False, items)
        original = run_b.train_step

        def stop_after_first():  # as Ctrl-C on rank 1 only: every rank must stop together
            result = original()
            if rank == 1:
                run_b.request_stop()
            return result

        run_b.train_step = stop_after_first
        assert run_b.train() is None and run_b.step == 1
        resumed = make_trainer(out, "b", [], True, items)
        assert resumed.step == 1
        resumed.train()
        save_file(parameters(resumed.model), out / f"b_rank{rank}.safetensors")
    elif scenario == "fsdp":
        items = [Problem(f"Q{i}", f"#### {i}", str(i), f"toy:{i}") for i in range(8)]
        evals = ["run.eval_every=2", "run.eval_batch_size=2"]
        plain = make_trainer(out, "p", evals, False, items, items[:3])
        assert not plain.sharded
        if rank == 0:
            save_file(parameters(plain.model), out / "fsdp_initial.safetensors")
        plain.train()
        save_file(full_parameters(plain), out / f"p_rank{rank}.safetensors")

        run_f = make_trainer(out, "f", evals + ["model.fsdp=true"], False, items, items[:3])
        assert run_f.sharded
        run_f.train()
        save_file(full_parameters(run_f), out / f"f_rank{rank}.safetensors")

        run_g = make_trainer(out, "g", evals + ["model.fsdp=true"], False, items, items[:3])
        original = run_g.train_step

        def stop_after_first_g():
            result = original()
            if rank == 1:
                run_g.request_stop()
            return result

        run_g.train_step = stop_after_first_g
        assert run_g.train() is None and run_g.step == 1
        resumed = make_trainer(out, "g", evals + ["model.fsdp=true"], True, items, items[:3])
        assert resumed.sharded and resumed.step == 1
        resumed.train()
        save_file(full_parameters(resumed), out / f"g_rank{rank}.safetensors")
    elif scenario == "filter":
        # Two prompts per step, one per rank: one prompt has a constant reward, so exactly one
        # rank keeps its group and the other keeps none, every step, with no refill.
        items = [
            Problem("Q0", "#### 0", "c", "toy:0"),
            Problem("Q1", "#### 1", "v", "toy:1"),
        ]
        trainer = make_trainer(
            out,
            "filter",
            [
                "optim.prompts_per_step=2",
                "optim.max_steps=2",
                "grpo.filter_zero_std_groups=true",
                "grpo.max_refill_rounds=0",
            ],
            False,
            items,
        )
        trainer.train()
        save_file(parameters(trainer.model), out / f"filter_rank{rank}.safetensors")
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    dist_utils.shutdown()


if __name__ == "__main__":
    main()
