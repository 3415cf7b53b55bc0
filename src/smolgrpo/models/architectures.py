"""What differs between model architectures, found from the model rather than from a table.

LoRA's target modules: `model.lora_target_modules: auto` picks every linear layer by its name
(`q_proj`, `qkv_proj`, `gate_up_proj`, ...) except the output head, so Llama, Qwen2, Mistral,
Gemma and Phi-3 (whose attention and MLP projections are fused) all get adapters on every
projection without a per-architecture list. An explicit list is checked against the model: a
list that matches nothing is a one-line error instead of peft's traceback.
"""

from __future__ import annotations

import torch

from smolgrpo.errors import SmolGRPOError


def linear_layer_names(model) -> list[str]:
    """The distinct last names of the model's nn.Linear layers, the output head left out."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            names.add(full_name.rsplit(".", 1)[-1])
    names.discard("lm_head")
    return sorted(names)


def lora_target_modules(model, requested: list | str) -> list[str]:
    """`requested` ("auto" or names) resolved against the model's linear layers."""
    present = linear_layer_names(model)
    if requested == "auto":
        if not present:
            raise SmolGRPOError("model.lora_target_modules: auto found no linear layer to adapt")
        return present
    requested = [str(name) for name in requested]
    if not any(name in present for name in requested):
        raise SmolGRPOError(
            f"model.lora_target_modules: none of {requested} is a linear layer of this model "
            f"(it has {', '.join(present)}; or use auto)"
        )
    return requested
