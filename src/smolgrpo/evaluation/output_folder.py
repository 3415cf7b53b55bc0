"""The output folder of `smolgrpo eval`: where it may write, and how an interrupted eval resumes.

An eval folder holds:
- `eval_config.json`, the marker written when the eval starts: the settings that decide what is
  measured (model, task, split, limit, sampling, prompt...) and the model's identity (its
  resolved path and a SHA-256 of its weight files), which `report --eval` checks;
- `samples.jsonl`, one record per completion, appended (and flushed to disk) after each batch;
- `eval_state.json`, rewritten after each batch: how many records of samples.jsonl are final,
  the random-number state to go on from and the seconds spent;
- `prompt_template.json`, and `metrics.json` at the end, or at a stop (SIGINT, SIGTERM...):
  the metrics of the problems done, with `"partial": true` and `num_problems_planned`.

`--output-dir` rules (checked before anything loads, nothing deleted until the model and data
have loaded): a new or empty folder is used; a folder holding an earlier eval is continued with
`--resume` (same settings) or replaced with `--overwrite`; a model or run folder, a folder that
holds the model or the data this eval reads, or any other non-empty folder is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from smolgrpo.errors import SmolGRPOError, warn
from smolgrpo.evaluation.paired import SAMPLES_FILE

EVAL_MARKER = "eval_config.json"
STATE_FILE = "eval_state.json"
METRICS_FILE = "metrics.json"
# What `smolgrpo eval` wrote before it had a marker file: a folder of only these is an eval.
LEGACY_EVAL_FILES = frozenset({"metrics.json", "samples.jsonl", "prompt_template.json"})
# Files that make a folder a model (or a training run) rather than an eval.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "config.yaml")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf")


# ----------------------------------------------------------------------------- model identity
def local_model_path(model: str) -> Path | None:
    """The model's folder or file on disk, resolved; None for a hub id or 'embedded'."""
    path = Path(model).expanduser()
    return path.resolve() if model != "embedded" and path.exists() else None


def model_fingerprint(path: Path | str | None) -> str | None:
    """SHA-256 over a local model's weight files (names and bytes); None without any."""
    if path is None:
        return None
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted({f for pattern in WEIGHT_PATTERNS for f in path.glob(pattern) if f.is_file()})
    )
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_identity(model: str) -> dict:
    """What `eval_config.json` records of the model it measured."""
    path = local_model_path(model)
    return {
        "model": model,
        "model_path": str(path) if path else None,
        "model_sha256": model_fingerprint(path),
    }


def read_marker(eval_dir: Path | str) -> dict | None:
    """The eval's `eval_config.json`, or None where there is none (an eval from before it)."""
    path = Path(eval_dir) / EVAL_MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SmolGRPOError(f"{path}: unreadable ({error})") from None
    if not isinstance(marker, dict) or not isinstance(marker.get("settings"), dict):
        raise SmolGRPOError(f"{path}: not a smolgrpo eval marker (no 'settings' object)")
    return marker


def check_eval_measured(eval_dir: Path | str, final: Path, metrics: dict) -> None:
    """One line unless the eval in `eval_dir` is a complete eval of the model in `final`: the
    weights' SHA-256 its eval_config.json recorded, or (an eval from before that file) the
    model path its metrics.json names."""
    if metrics.get("partial"):
        raise SmolGRPOError(
            f"{eval_dir}: a partial eval ({metrics.get('num_problems')} of "
            f"{metrics.get('num_problems_planned')} problems); finish it with `smolgrpo eval "
            "--resume` before its numbers go into the model card"
        )
    marker = read_marker(eval_dir) or {}
    measured = marker.get("model_sha256")
    if measured is not None and measured == model_fingerprint(final):
        return
    if measured is None:
        given = marker.get("model_path") or metrics.get("model")
        if isinstance(given, str) and local_model_path(given) == final.resolve():
            return
    shown = marker.get("model") or metrics.get("model") or "an unnamed model"
    changed = measured is not None and local_model_path(str(shown)) == final.resolve()
    why = "the weights in it changed since" if changed else f"it measured {shown}"
    raise SmolGRPOError(
        f"{eval_dir}: not an eval of {final} ({why}); the model card keeps its numbers only "
        f"for this model: run `smolgrpo eval --model {final}`"
    )


# ----------------------------------------------------------------------------- the folder
def _contains(folder: Path, path: Path) -> bool:
    return path == folder or folder in path.parents


def is_eval_dir(folder: Path) -> bool:
    names = {entry.name for entry in folder.iterdir()}
    return EVAL_MARKER in names or (bool(names) and names <= LEGACY_EVAL_FILES)


def _model_file_in(folder: Path) -> str | None:
    for entry in folder.iterdir():
        if entry.name in MODEL_FILES or entry.suffix in MODEL_FILE_SUFFIXES:
            return entry.name
    return None


def check_output_dir(
    output_dir: Path, *, model: str, data: list[Path], resume: bool, overwrite: bool
) -> str:
    """'new' (missing or empty), 'resume' or 'replace' (an earlier eval); one-line refusals
    otherwise. Reads only: nothing is created or deleted here."""
    if output_dir.exists() and not output_dir.is_dir():
        raise SmolGRPOError(f"--output-dir {output_dir}: a file, not a folder")
    target = output_dir.resolve()
    model_path = local_model_path(model)
    if model_path is not None and _contains(target, model_path):
        what = "is the model folder" if target == model_path else "holds the model"
        raise SmolGRPOError(
            f"--output-dir {output_dir}: {what} this eval reads ({model}); choose another folder"
        )
    for source in data:
        if _contains(target, source.resolve()):
            raise SmolGRPOError(
                f"--output-dir {output_dir}: holds the data this eval reads ({source}); choose "
                "another folder"
            )
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return "new"
    if not (output_dir / EVAL_MARKER).is_file():
        found = _model_file_in(output_dir)
        if found is not None:
            kind = "a training run" if found == "config.yaml" else "a model"
            raise SmolGRPOError(
                f"--output-dir {output_dir}: {kind} folder ({found}), not an eval folder; "
                "choose another folder"
            )
    if not is_eval_dir(output_dir):
        raise SmolGRPOError(
            f"--output-dir {output_dir}: not empty and not a smolgrpo eval folder (no "
            f"{EVAL_MARKER}); choose a new or empty folder"
        )
    if resume:
        if read_marker(output_dir) is None:
            raise SmolGRPOError(
                f"--output-dir {output_dir}: an eval written before `eval --resume` existed "
                "(no eval_config.json): it cannot be continued; --overwrite replaces it"
            )
        return "resume"
    if overwrite:
        return "replace"
    raise SmolGRPOError(
        f"--output-dir {output_dir}: already holds an eval; pass --resume to continue it or "
        "--overwrite to replace it"
    )


def check_resume_settings(output_dir: Path, settings: dict, identity: dict) -> None:
    """The eval to continue measured the same thing, or one line naming the first difference."""
    marker = read_marker(output_dir)
    saved = marker["settings"]
    for key in sorted(set(saved) | set(settings)):
        if saved.get(key) != settings.get(key):
            raise SmolGRPOError(
                f"{output_dir}: cannot resume: '{key}' was {saved.get(key)!r}, now "
                f"{settings.get(key)!r} (a resumed eval must measure the same thing; "
                "--overwrite starts over)"
            )
    old, new = marker.get("model_sha256"), identity.get("model_sha256")
    if old and new and old != new:
        raise SmolGRPOError(
            f"{output_dir}: cannot resume: the model's weights changed since the eval began "
            "(--overwrite starts over)"
        )


def start_output_dir(output_dir: Path, settings: dict, identity: dict, replace: bool) -> None:
    """Make the folder (replacing an earlier eval, which `check_output_dir` allowed) and write
    the marker, an empty samples file and the state of an eval with nothing done yet."""
    if replace:
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    marker = {"smolgrpo_eval": 1, **identity, "settings": settings}
    _write_atomic(output_dir / EVAL_MARKER, json.dumps(marker, indent=2) + "\n")
    (output_dir / METRICS_FILE).unlink(missing_ok=True)
    (output_dir / SAMPLES_FILE).write_text("", encoding="utf-8")
    write_state(output_dir, 0, 0.0)


# ----------------------------------------------------------------------------- per batch
def append_samples(output_dir: Path, records: list[dict]) -> None:
    """One batch's records at the end of samples.jsonl, on disk before the state says so."""
    with open(output_dir / SAMPLES_FILE, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_state(output_dir: Path, num_records: int, time_s: float) -> None:
    """After a batch: how many records are final and the RNG state the next batch starts from
    (so a resumed sampled eval draws what the uninterrupted one would have)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    state = {
        "num_records": num_records,
        "time_s": round(time_s, 3),
        "rng_torch_cpu": _encode(torch.get_rng_state()),
        "rng_torch_cuda": None if cuda is None else [_encode(s) for s in cuda],
    }
    _write_atomic(output_dir / STATE_FILE, json.dumps(state) + "\n")


def resume_from(output_dir: Path) -> tuple[list[dict], float]:
    """(the final records of samples.jsonl, seconds already spent), with the RNG state set to
    continue from; records after the last state (a batch cut short by a kill) are dropped."""
    path = output_dir / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        count, spent = int(state["num_records"]), float(state["time_s"])
        cpu_state = _decode(state["rng_torch_cpu"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SmolGRPOError(
            f"{path}: unreadable eval state ({error}); --overwrite starts over"
        ) from None
    samples = output_dir / SAMPLES_FILE
    records, end = [], 0
    with open(samples, "rb") as handle:
        for line in handle:
            if len(records) == count:
                break
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short by a kill: not final
                break
            end += len(line)
    if len(records) < count:
        raise SmolGRPOError(
            f"{samples}: {len(records)} complete samples, but {STATE_FILE} counts {count}; "
            "--overwrite starts over"
        )
    with open(samples, "r+b") as handle:  # later batches append after the last final record
        handle.truncate(end)
    torch.set_rng_state(cpu_state)
    cuda = state.get("rng_torch_cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_decode(s) for s in cuda])
    elif cuda:
        warn("the interrupted eval ran on other CUDA devices: sampling does not continue its draws")
    return records, spent


def write_metrics(output_dir: Path, metrics: dict) -> None:
    _write_atomic(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")


def _encode(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _decode(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _write_atomic(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)
