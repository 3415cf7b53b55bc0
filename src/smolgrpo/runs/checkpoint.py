"""Checkpoints: atomic, safetensors-only, verified on resume.

A checkpoint is a folder `checkpoints/step_N/` holding
  model.safetensors      trainable parameters (all of them, or the LoRA adapters)
  optimizer.safetensors  the optimizer's tensors (Adam moments, step counts)
  rng.safetensors        torch CPU (and CUDA) RNG state
  state.json             step, data position, scheduler and optimizer hyper-parameters, Python RNG,
                         training time and the config the run trained with (resume_check.py)
  manifest.json          step and the SHA-256 of every file above, written last
It is written into a temporary folder beside it and renamed into place, so a crash mid-write
leaves the previous checkpoint untouched. Nothing is ever unpickled: tensors come from
safetensors, everything else from JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from smolgrpo.errors import SmolGRPOError, is_disk_full, warn
from smolgrpo.models.loading import share_weight_files

MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {
        name: parameter.detach().contiguous().cpu()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }


def _optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An `optimizer.state_dict()` split into tensors (safetensors) and the rest (JSON)."""
    tensors = {}
    scalars: dict[str, dict] = {}
    for param_id, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value.contiguous().cpu()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of `_optimizer_tensors`: an `optimizer.state_dict()`."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    """This process's torch RNG state: CPU, and the current CUDA device when there is one."""
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(
    run_dir: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    data_state: dict,
    keep: int = 2,
    rank_rng_states: list[dict[str, torch.Tensor]] | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict | None = None,
    train_time_s: float = 0.0,
    config: dict | None = None,
) -> Path:
    """Write `checkpoints/step_N/` atomically; `rank_rng_states[r]` is rank r's `rng_state()`
    (ranks sample with different seeds, so each needs its own RNG back on resume).

    `model_state` / `optimizer_state`, when given, replace `trainable_state(model)` /
    `optimizer.state_dict()` (FSDP passes the full state gathered from all ranks). `config`: the
    run's config as a dict, kept in state.json (`recorded_config`) so that --resume can tell
    what changed."""
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"step_{step}"
    staging = checkpoints / f".tmp-step_{step}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _write_checkpoint_files(
            staging,
            step,
            model,
            optimizer,
            scheduler,
            data_state,
            rank_rng_states,
            model_state,
            optimizer_state,
            train_time_s,
            config,
        )
    except Exception as error:  # safetensors raises its own type, even for a full disk
        # Nothing visible has changed yet: drop the half-written folder (it only takes space)
        # and leave the previous checkpoint as the newest.
        shutil.rmtree(staging, ignore_errors=True)
        if not is_disk_full(error):
            raise
        previous = list_checkpoints(run_dir)
        kept = f"{previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        raise SmolGRPOError(
            f"{final}: disk full while writing the checkpoint; {kept}. Free some space "
            "(or lower run.keep_checkpoints) and continue with --resume"
        ) from error
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_folder(checkpoints)  # the rename itself on disk, not only the files
    _prune(checkpoints, keep, final)
    return final


def _write_checkpoint_files(
    staging: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    data_state: dict,
    rank_rng_states: list[dict[str, torch.Tensor]] | None,
    model_state: dict[str, torch.Tensor] | None,
    optimizer_state: dict | None,
    train_time_s: float = 0.0,
    config: dict | None = None,
) -> None:
    """Every file of a checkpoint, manifest last, fsynced, into the (invisible) staging folder."""
    if model_state is None:
        model_state = trainable_state(model)
    save_file(model_state, staging / "model.safetensors")
    if optimizer_state is None:
        optimizer_state = optimizer.state_dict()
    optimizer_tensors, optimizer_meta = _optimizer_tensors(optimizer_state)
    save_file(optimizer_tensors, staging / "optimizer.safetensors")
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{index}"] = cuda_state
    for rank, states in enumerate(rank_rng_states or []):
        for key, value in states.items():
            rng[f"rank{rank}/{key}"] = value
    save_file(rng, staging / "rng.safetensors")
    share_weight_files(staging)
    python_state = random.getstate()
    state = {
        "step": step,
        "data": data_state,
        "scheduler": scheduler.state_dict(),
        "optimizer": optimizer_meta,
        "python_rng": [python_state[0], list(python_state[1]), python_state[2]],
        "train_time_s": train_time_s,  # run.time_limit_s counts it across --resume
    }
    if config is not None:
        state["config"] = config
    (staging / "state.json").write_text(json.dumps(state))
    files = {p.name: _sha256(p) for p in sorted(staging.iterdir())}
    (staging / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1))
    for path in staging.iterdir():  # data on disk before the rename makes it visible
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_folder(staging)  # and the folder's entries for them


def _step_of(path: Path) -> int:
    try:
        return int(path.name.removeprefix("step_"))
    except ValueError:
        return -1


def list_checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith("step_") and _step_of(p) >= 0
    ]
    return sorted(found, key=_step_of)


def _fsync_folder(folder: Path) -> None:
    """Make a folder's entries (a file created or renamed in it) durable; a no-op where folders
    cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _prune(checkpoints: Path, keep: int, newest: Path) -> None:
    """Keep `newest` (just written and verified on disk) and the keep - 1 checkpoints before it.

    Checkpoints of later steps are left alone: they can only be left over from before a
    --resume that skipped them as broken, and counting them would delete the one good
    checkpoint just written (keep_checkpoints: 1). They are replaced when the run gets there."""
    step = _step_of(newest)
    older = [path for path in list_checkpoints(checkpoints.parent) if _step_of(path) < step]
    for old in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)


# Every checkpoint holds these (load_checkpoint reads each); a manifest may list more.
REQUIRED_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")
_HEX = set("0123456789abcdef")


def _manifest_problem(manifest, path: Path) -> str | None:
    """What is wrong with a manifest's shape, or None: a JSON object with the folder's step and
    a `files` object mapping plain file names (no folder, no `..`) to SHA-256 digests, every
    REQUIRED_FILES name among them."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return "unreadable manifest (no 'files' object)"
    folder_step = _step_of(path)
    step = manifest.get("step")
    if folder_step >= 0 and (type(step) is not int or step != folder_step):
        return f"manifest is for step {step!r}, not {folder_step}"
    for name, digest in manifest["files"].items():
        if name in ("", ".", "..", MANIFEST) or Path(name).name != name or "\\" in name:
            return f"manifest lists {name!r}, not a plain file name in the checkpoint"
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
            return f"manifest has no SHA-256 for {name}"
    unlisted = [name for name in REQUIRED_FILES if name not in manifest["files"]]
    if unlisted:
        return f"manifest does not list {', '.join(unlisted)}"
    return None


def verify_checkpoint(path: Path) -> str | None:
    """None when the checkpoint is complete and intact, else the reason it is not."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (incomplete write)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, OSError):
        return "unreadable manifest"
    problem = _manifest_problem(manifest, path)
    if problem is not None:
        return problem
    for name, expected in manifest["files"].items():
        file_path = path / name
        if file_path.is_symlink() or not file_path.is_file():
            return f"missing {name}"
        if _sha256(file_path) != expected:
            return f"checksum mismatch in {name}"
    return None


def latest_good_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that verifies; broken newer ones are reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        warn(f"{path}: skipped, {problem}")
    return None


def recorded_config(path: Path) -> dict | None:
    """The config a checkpoint was written with, or None (written before checkpoints recorded
    it, or its state.json is unreadable: verification reports that)."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError):
        return None
    config = state.get("config") if isinstance(state, dict) else None
    return config if isinstance(config, dict) else None


def _check_parameters(path: Path, model) -> None:
    """One line when the checkpoint's tensors do not fit the model's trainable parameters (a
    checkpoint from another model, LoRA rank or target list), before anything is loaded."""
    with safe_open(path / "model.safetensors", framework="pt") as handle:  # header only
        shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    parameters = dict(model.named_parameters())
    missing = [name for name in shapes if name not in parameters]
    if missing:  # raised on every rank alike, before any collective
        raise SmolGRPOError(f"{path}: checkpoint does not match the model (e.g. '{missing[0]}')")
    for name, shape in shapes.items():
        if tuple(parameters[name].shape) != shape:
            raise SmolGRPOError(
                f"{path}: checkpoint does not match the model ('{name}' has shape "
                f"{list(shape)} in the checkpoint, {list(parameters[name].shape)} in the model)"
            )
    absent = [n for n, p in parameters.items() if p.requires_grad and n not in shapes]
    if absent:
        raise SmolGRPOError(
            f"{path}: checkpoint does not match the model (no '{absent[0]}' in the checkpoint)"
        )


def load_checkpoint(
    path: Path, model, optimizer, scheduler, rank: int = 0, sharded: bool = False
) -> dict:
    """Restore model, optimizer, scheduler and RNG (this rank's) in place; returns the state.

    `sharded` (FSDP, collective): rank 0 reads the full weights and optimizer state and they
    are broadcast into every rank's shards."""
    problem = verify_checkpoint(path)
    if problem:
        raise SmolGRPOError(f"{path}: cannot resume, {problem}")
    _check_parameters(path, model)
    parameters = dict(model.named_parameters())
    state = json.loads((path / "state.json").read_text())
    if sharded:
        from smolgrpo.models.fsdp import load_full_state

        weights, optimizer_state = {}, {}
        if rank == 0:
            weights = load_file(path / "model.safetensors")
            tensors = load_file(path / "optimizer.safetensors")
            optimizer_state = _optimizer_state(tensors, state["optimizer"])
        load_full_state(model, optimizer, weights, optimizer_state)
        for group, saved in zip(optimizer.param_groups, state["optimizer"]["param_groups"]):
            # DCP broadcasts these too; set them on every rank from state.json regardless.
            group.update({k: v for k, v in saved.items() if k != "params"})
    else:
        weights = load_file(path / "model.safetensors")
        with torch.no_grad():
            for name, value in weights.items():
                parameters[name].copy_(value)
        tensors = load_file(path / "optimizer.safetensors")
        optimizer.load_state_dict(_optimizer_state(tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(path / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda_keys = [k for k in rng if k.startswith("torch_cuda_")]
        cuda_states = [rng[k] for k in sorted(cuda_keys, key=lambda k: int(k.rsplit("_", 1)[1]))]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    if f"rank{rank}/torch_cpu" in rng:
        torch.set_rng_state(rng[f"rank{rank}/torch_cpu"])
        if torch.cuda.is_available() and f"rank{rank}/torch_cuda" in rng:
            torch.cuda.set_rng_state(rng[f"rank{rank}/torch_cuda"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return state
