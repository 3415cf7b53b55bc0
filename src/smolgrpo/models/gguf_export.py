"""Write a trained model as one GGUF file that llama.cpp, Ollama and LM Studio run.

    smolgrpo export runs/NAME/final --gguf model.gguf [--outtype f32|f16|q8_0] [--ollama]

The file holds the weights, the tokenizer (byte-level BPE: tokens, merges, token types, special
ids; gguf_tokenizer.py), the chat template, and the prompt the model was trained with: its
system prompt and prefill under `smolgrpo.system_prompt` / `smolgrpo.prefill` (llama.cpp has
no key for either; ollama.py puts both into a Modelfile).

How it departs from llama.cpp's `convert_hf_to_gguf.py`: it is written for what a smolgrpo run
saves (a run's `final/` is already a plain model, LoRA merged), for Llama-family models (SmolLM2)
and Qwen2 only; anything else is refused by name rather than written half right. Two details
matter for the numbers: transformers' Llama rotates the two halves of each attention head
(`rotate_half`) while llama.cpp's Llama rotates adjacent pairs, so the rows of q_proj and k_proj
are reordered head by head (Qwen2 runs in llama.cpp's "NeoX" mode, halves as in transformers,
so it is written as is); and a model with tied embeddings gets no `output.weight` (llama.cpp
then reuses `token_embd.weight`). With q8_0, matrices are quantized (blocks of 32 values), and
1-D tensors (norms, biases) stay float32 as in every GGUF.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from smolgrpo.errors import SmolGRPOError, warn
from smolgrpo.models.gguf_tokenizer import gguf_vocabulary
from smolgrpo.tasks.prompts import PromptTemplate

# transformers' model_type -> (llama.cpp architecture name, reorder q/k rows for its rope)
ARCHITECTURES = {"llama": ("llama", True), "qwen2": ("qwen2", False)}
OUTTYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32  # values per q8_0 block: a matrix row must be a whole number of blocks


def check_architecture(config) -> tuple[str, bool]:
    """(llama.cpp architecture, whether q/k rows are reordered); anything else is one line."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise SmolGRPOError(
            f"cannot export a '{model_type}' model to GGUF; supported architectures: "
            f"{', '.join(ARCHITECTURES)}"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise SmolGRPOError(
            f"cannot export rope_type '{rope['rope_type']}' to GGUF (only the default rope)"
        )
    if getattr(config, "use_sliding_window", False):
        raise SmolGRPOError("cannot export a model with use_sliding_window to GGUF")
    if model_type == "llama" and (config.attention_bias or config.mlp_bias):
        raise SmolGRPOError("cannot export a Llama model with attention or MLP biases to GGUF")
    return ARCHITECTURES[model_type]


def check_outtype(outtype: str) -> str:
    if outtype not in OUTTYPES:
        raise SmolGRPOError(f"--outtype '{outtype}': choose one of {', '.join(OUTTYPES)}")
    return outtype


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def interleave_rotary_halves(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Rows of a q/k projection reordered per head from [x_0..x_{d/2-1}, y_0..y_{d/2-1}]
    (transformers' rotate_half pairs row i with row i + d/2) to [x_0, y_0, x_1, y_1, ...]
    (llama.cpp's rope pairs adjacent rows)."""
    rows = weight.shape[0]  # num_heads * head_dim
    halves = weight.reshape(num_heads, 2, rows // num_heads // 2, *weight.shape[1:])
    return halves.swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(model, architecture: str, reorder_rotary: bool):
    """(GGUF name, float32 array) for every weight the file needs, in the model's order."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(
        gguf.MODEL_ARCH[architecture.upper()], config.num_hidden_layers
    )
    tied = getattr(config, "tie_word_embeddings", False)
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp reads the output head from token_embd.weight
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise SmolGRPOError(f"cannot export tensor '{name}': no GGUF name for it")
        array = tensor.detach().to(torch.float32).cpu().numpy()
        if reorder_rotary and name.endswith("q_proj.weight"):
            array = interleave_rotary_halves(array, config.num_attention_heads)
        elif reorder_rotary and name.endswith("k_proj.weight"):
            array = interleave_rotary_halves(array, config.num_key_value_heads)
        yield target, array


def encode_tensor(array: np.ndarray, outtype: str):
    """(data, GGML type) for one tensor: 1-D ones stay float32; q8_0 needs rows of whole
    blocks, so a matrix whose rows are not falls back to f16 (as llama.cpp's converter does)."""
    from gguf import GGMLQuantizationType as Type
    from gguf.quants import quantize

    if array.ndim == 1 or outtype == "f32":
        return array.astype(np.float32), Type.F32
    if outtype == "q8_0" and array.shape[-1] % Q8_BLOCK == 0:
        return quantize(array.astype(np.float32), Type.Q8_0), Type.Q8_0
    return array.astype(np.float16), Type.F16


def _add_hyperparameters(writer, config, outtype: str) -> None:
    import gguf

    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim(config))
    if head_dim(config) != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim(config))
        writer.add_value_length(head_dim(config))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_types[outtype])
    if outtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    vocabulary = gguf_vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocabulary.pre)
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.token_types)
    writer.add_token_merges(vocabulary.merges)
    adders = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "unk": writer.add_unk_token_id,
        "pad": writer.add_pad_token_id,
    }
    for name, index in vocabulary.special_ids.items():
        adders[name](index)
    writer.add_add_bos_token(vocabulary.add_bos)
    if isinstance(tokenizer.chat_template, str) and tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _add_prompt(writer, template: PromptTemplate) -> None:
    writer.add_string("smolgrpo.system_prompt", template.system_prompt)
    writer.add_string("smolgrpo.prefill", template.prefill)
    writer.add_uint32("smolgrpo.num_few_shot", template.num_few_shot)


def write_gguf(
    model, tokenizer, template: PromptTemplate, path: Path, outtype: str, name: str
) -> Path:
    """Write `model` + `tokenizer` + `template` to `path` (through a temporary file beside it,
    renamed at the end: an interrupted export never leaves a truncated .gguf)."""
    import gguf

    architecture, reorder_rotary = check_architecture(model.config)
    check_outtype(outtype)
    path = Path(path)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(staging, architecture)
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        _add_hyperparameters(writer, model.config, outtype)
        _add_tokenizer(writer, tokenizer, model.config.vocab_size)
        _add_prompt(writer, template)
        for tensor_name, array in gguf_tensors(model, architecture, reorder_rotary):
            data, ggml_type = encode_tensor(array, outtype)
            writer.add_tensor(tensor_name, data, raw_dtype=ggml_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        Path(staging).chmod(0o666 & ~_umask())
        os.replace(staging, path)
    finally:
        Path(staging).unlink(missing_ok=True)
    return path


def _umask() -> int:
    umask = os.umask(0)  # the only way to read it; set back at once
    os.umask(umask)
    return umask


# ----------------------------------------------------------------------------- the command
def check_source(source: str) -> None:
    """A model folder of a supported architecture (or `embedded`), checked before any weight
    loads."""
    from smolgrpo.models.loading import EMBEDDED

    if source == EMBEDDED:
        return
    folder = Path(source)
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        raise SmolGRPOError(
            f"{folder}: a LoRA adapter, not a whole model; export a run's final/ (LoRA merged)"
        )
    if not (folder / "config.json").is_file():
        hint = "; for a run, pass RUN/final" if (folder / "final").is_dir() else ""
        raise SmolGRPOError(f"{folder}: not a model folder (no config.json){hint}")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SmolGRPOError(f"{folder}/config.json: cannot read it ({first})") from None
    check_architecture(config)


def check_outputs(paths: list[Path], overwrite: bool) -> None:
    for path in paths:
        if path.is_dir():
            raise SmolGRPOError(f"{path}: is a folder; name the output file")
        if path.exists() and not overwrite:
            raise SmolGRPOError(f"{path}: already exists (pass --overwrite to replace it)")


def export_model(
    source: str,
    gguf_path: Path,
    outtype: str = "f16",
    overwrite: bool = False,
    ollama: bool = False,
) -> list[Path]:
    """Export `source` (a model folder such as RUN/final, or `embedded`) to `gguf_path`, plus
    a Modelfile beside it with `ollama`; the paths written. Every check runs before writing."""
    from smolgrpo.models.loading import load_model_and_tokenizer
    from smolgrpo.models.ollama import MODELFILE_NAME, modelfile_for
    from smolgrpo.tasks.prompts import PROMPT_TEMPLATE_FILE, load_prompt_template

    gguf_path = Path(gguf_path)
    check_outtype(outtype)
    if gguf_path.suffix != ".gguf":
        raise SmolGRPOError(f"{gguf_path}: the output name must end in .gguf")
    modelfile_path = gguf_path.parent / MODELFILE_NAME
    check_outputs([gguf_path] + ([modelfile_path] if ollama else []), overwrite)
    check_source(source)
    saved = Path(source) / PROMPT_TEMPLATE_FILE
    template = load_prompt_template(saved) if saved.is_file() else PromptTemplate()
    if template.num_few_shot:
        warn(
            f"{saved}: the model was trained with {template.num_few_shot} few-shot example(s); "
            "the export keeps its system prompt and prefill only"
        )
    model, tokenizer = load_model_and_tokenizer(source, device="cpu", dtype="float32")
    modelfile = modelfile_for(gguf_path, model, tokenizer, template) if ollama else None
    gguf_path.parent.mkdir(parents=True, exist_ok=True)
    name = Path(source).parent.name if Path(source).name == "final" else Path(source).name
    written = [write_gguf(model, tokenizer, template, gguf_path, outtype, name)]
    if modelfile is not None:
        modelfile_path.write_text(modelfile, encoding="utf-8")
        written.append(modelfile_path)
    return written
