"""`smolgrpo train` for the fault-injection test in test_fault_injection.py.

    python _kill_worker.py train --config RECIPE [--resume] ...

The same command line as the installed `smolgrpo`, with two test-only additions made from here
(never in the package): the toy `digits` reward is registered, since a random tiny model never
earns the real rewards and a zero reward gives GRPO nothing to learn; and with
`PAUSE_IN_CHECKPOINT=STEP:MARKER` set, writing checkpoint STEP stops half-way (after
model.safetensors, before the optimizer state and the manifest), touches MARKER and sleeps, so
the test can SIGKILL the process while a checkpoint is being written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from smolgrpo.cli import main as cli
from smolgrpo.rewards import builtin as rewards
from smolgrpo.runs import checkpoint


def digits_reward(completions, answers, **fields):
    """Fraction of digit characters: varied from the first step on a random model."""
    return [sum(c.isdigit() for c in text) / len(text) if text else 0.0 for text in completions]


def pause_in_checkpoint(step: int, marker: Path) -> None:
    real_save_file = checkpoint.save_file

    def save_file(tensors, path, *args, **kwargs):
        path = Path(path)
        if path.parent.name == f".tmp-step_{step}" and path.name == "optimizer.safetensors":
            marker.write_text(str(os.getpid()))
            time.sleep(120)  # the test kills us here
        return real_save_file(tensors, path, *args, **kwargs)

    checkpoint.save_file = save_file


if __name__ == "__main__":
    rewards.REWARDS["digits"] = rewards.RewardSpec(digits_reward)
    if os.environ.get("PAUSE_IN_CHECKPOINT"):
        step, marker = os.environ["PAUSE_IN_CHECKPOINT"].split(":", 1)
        pause_in_checkpoint(int(step), Path(marker))
    sys.exit(cli.main(sys.argv[1:]))
