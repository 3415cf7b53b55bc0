"""Average saved models' weights uniformly (a "model soup"): the first folder is copied (config,
tokenizer, prompt_template.json, card) and its model.safetensors replaced by the mean of all.
The models must share one architecture (the same pretrained start); safetensors only. A
training checkpoint (`<run>/checkpoints/step_N`, weights only are read) may be any folder but the
first, which must be a saved model (e.g. `<run>/final`).

    python analysis/average_models.py OUT MODEL_DIR MODEL_DIR [MODEL_DIR ...]
    smolgrpo eval --model OUT --batch-size 64 --output-dir runs/eval-OUT-1319

An experiment, not part of a recipe (README, the ablations of the CPU chain).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"


def average_state_dicts(state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each tensor's mean over the models, computed in float32, kept in the first one's dtype."""
    keys = set(state_dicts[0])
    for index, state in enumerate(state_dicts[1:], start=2):
        if set(state) != keys or any(state[k].shape != state_dicts[0][k].shape for k in keys):
            raise ValueError(f"model {index} does not match model 1's tensors")
    return {
        key: (sum(state[key].float() for state in state_dicts) / len(state_dicts)).to(
            state_dicts[0][key].dtype
        )
        for key in state_dicts[0]
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        if len(args.models) < 2:
            raise ValueError("give at least two model folders to average")
        for folder in args.models:
            if not (folder / WEIGHTS).is_file():
                raise ValueError(f"{folder / WEIGHTS} not found")
        averaged = average_state_dicts([load_file(folder / WEIGHTS) for folder in args.models])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    shutil.copytree(args.models[0], args.output, dirs_exist_ok=True)
    save_file(averaged, args.output / WEIGHTS, metadata={"format": "pt"})
    print(f"averaged {len(args.models)} models into {args.output}")


if __name__ == "__main__":
    main()
