"""`smolgrpo train`, slowed down on purpose, for the signal tests in test_interrupts.py.

    SLOW_FORWARD=SECONDS:FOLDER python _interrupt_worker.py train --config RECIPE ...

The same command line as the installed `smolgrpo`, with test-only additions made from here (never
in the package): the toy `digits` reward of _kill_worker.py is registered, and with SLOW_FORWARD
set every forward of the causal LM first sleeps SECONDS and touches FOLDER/<phase>, where the phase
is `decode` (rollout), `train` (a forward with gradients) or `eval` (periodic evaluation). The
test so knows which part of a step is running when it sends its signal. While FOLDER/stall
exists, a forward touches FOLDER/stalled and sleeps 120 s instead: a step that cannot reach its
next check point, for the second-signal and grace tests.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from _kill_worker import digits_reward

from smolgrpo.cli import main as cli
from smolgrpo.rewards import builtin as rewards
from smolgrpo.training.trainer import Trainer

IN_EVAL = False


def slow_forwards(seconds: float, folder: Path) -> None:
    real_periodic_eval = Trainer.periodic_eval

    def periodic_eval(self):
        global IN_EVAL
        IN_EVAL = True
        try:
            return real_periodic_eval(self)
        finally:
            IN_EVAL = False

    def before_forward(module, _args):
        if not type(module).__name__.endswith("ForCausalLM"):
            return
        if (folder / "stall").exists():
            (folder / "stalled").touch()
            time.sleep(120)  # the test signals us here
        phase = "eval" if IN_EVAL else "train" if torch.is_grad_enabled() else "decode"
        (folder / phase).touch()
        time.sleep(seconds)

    Trainer.periodic_eval = periodic_eval
    torch.nn.modules.module.register_module_forward_pre_hook(before_forward)


if __name__ == "__main__":
    rewards.REWARDS["digits"] = rewards.RewardSpec(digits_reward)
    if os.environ.get("SLOW_FORWARD"):
        seconds, folder = os.environ["SLOW_FORWARD"].split(":", 1)
        slow_forwards(float(seconds), Path(folder))
    sys.exit(cli.main(sys.argv[1:]))
