"""Optional FSDP2 sharding (`model.fsdp: true`) for models that do not fit on one device.

Under torchrun with several ranks, each decoder layer (any module whose class name ends with
"DecoderLayer") and then the root model are wrapped with `fully_shard`: every rank holds a shard
of the parameters, gradients and Adam state, and each forward all-gathers a layer's weights.

Gradients: FSDP reduce-scatters them after every backward and would average them over ranks;
the trainer's losses are already normalised by global counts, so the reduction is made a plain
SUM (divide factor 1, sum-only collectives), exactly as the flat all-reduce of the unsharded
path, which is skipped under FSDP.

Every forward is a collective, so all ranks must run the same number of them: generation uses
`synced_gpus`, periodic evaluation runs on every rank, each rank trains on the same number of
rows (`optim.prompts_per_step` divisible by the world size, no dynamic sampling).

Checkpoints hold the full (unsharded) state in the same files as without FSDP: the state is
gathered to rank 0 for saving and broadcast from rank 0 on resume, so a checkpoint written with
FSDP resumes without it and the other way round.
"""

from __future__ import annotations

import torch

from smolgrpo.errors import SmolGRPOError, warn


def enabled(config, world_size: int, is_main: bool) -> bool:
    """Whether to shard; checks what FSDP needs and raises a one-line error otherwise."""
    if not config.model.fsdp:
        return False
    if world_size <= 1:
        if is_main:
            warn("model.fsdp ignored: it needs torchrun with WORLD_SIZE > 1")
        return False
    if config.optim.prompts_per_step % world_size:
        raise SmolGRPOError(
            f"config: model.fsdp needs optim.prompts_per_step ({config.optim.prompts_per_step}) "
            f"divisible by the number of processes ({world_size})"
        )
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        raise SmolGRPOError(
            f"model.fsdp needs FSDP2 (torch.distributed.fsdp.fully_shard); torch {torch.__version__}"
            " lacks it"
        ) from None
    for method in ("set_gradient_divide_factor", "set_force_sum_reduction_for_comms"):
        if not hasattr(FSDPModule, method):
            raise SmolGRPOError(
                f"model.fsdp needs FSDPModule.{method}, missing from torch {torch.__version__}"
            )
    return True


def shard_model(model) -> None:
    """Shard each decoder layer, then the root (which keeps embeddings, norm and head), in place."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # sum over ranks, do not average
            module.set_force_sum_reduction_for_comms(True)  # plain SUM collectives (gloo too)


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor (e.g. the grad norm of sharded parameters) as a plain tensor."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_state_dict(model) -> dict[str, torch.Tensor]:
    """The whole model's state dict on CPU on rank 0 ({} elsewhere). Collective: all ranks call."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def trainable_full_state(model) -> dict[str, torch.Tensor]:
    """`checkpoint.trainable_state` of the unsharded model, on rank 0 ({} elsewhere). Collective."""
    full = full_state_dict(model)
    if not full:
        return {}
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    return {name: full[name].contiguous() for name in names}


def _parameter_names(model, optimizer) -> list[str]:
    """The optimizer's parameters in order (its state_dict ids 0, 1, ...), by name."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_optimizer_state(model, optimizer) -> dict:
    """`optimizer.state_dict()` of the unsharded model (integer ids), on rank 0 ({} elsewhere).

    Collective: all ranks call.
    """
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    if not state:
        return {}
    index = {name: i for i, name in enumerate(_parameter_names(model, optimizer))}
    return {
        "state": {index[name]: values for name, values in state["state"].items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]}
            for group in state["param_groups"]
        ],
    }


def load_full_state(model, optimizer, weights: dict, optimizer_state: dict) -> None:
    """Load full (unsharded) weights and optimizer state held by rank 0 into the sharded model.

    `weights` maps names to tensors and `optimizer_state` is in `optimizer.state_dict()` form;
    both are {} on other ranks, which receive the tensors by broadcast. Collective.
    """
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    # strict=False: tied weights (lm_head = embed_tokens) are stored once, under one name.
    set_model_state_dict(model, weights, options=_options(broadcast_from_rank0=True, strict=False))
    named = {}
    if optimizer_state:
        names = _parameter_names(model, optimizer)
        named = {
            "state": {names[int(i)]: values for i, values in optimizer_state["state"].items()},
            "param_groups": [
                {**group, "params": [names[int(i)] for i in group["params"]]}
                for group in optimizer_state["param_groups"]
            ],
        }
    set_optimizer_state_dict(model, optimizer, named, options=_options(broadcast_from_rank0=True))
