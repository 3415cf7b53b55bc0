"""A byte-level BPE tokenizer as llama.cpp's GGUF metadata: tokens, merges, token types, ids.

llama.cpp does not read `tokenizer.json`; it rebuilds the tokenizer from `tokenizer.ggml.*` keys
and picks the regex that splits text before the merges by name (`tokenizer.ggml.pre`). The
name is read here from the pre-tokenizer's shape, never guessed: a shape that matches none of
the known ones is refused, since a wrong split would tokenize prompts differently from training
without any error. Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is written: SmolLM2,
Qwen2, Llama 3 and most small chat models use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from smolgrpo.errors import SmolGRPOError

# llama.cpp's token types (gguf.TokenType): the same numbers, named here for the reader.
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass
class GGUFVocabulary:
    tokens: list[str]  # one per model row, padded with "[PAD<id>]" up to the model's vocab size
    token_types: list[int]
    merges: list[str]  # "left right", in rank order
    pre: str  # llama.cpp's pre-tokenizer name
    special_ids: dict[str, int]  # bos, eos, unk, pad -> id, those the tokenizer has
    add_bos: bool  # whether encoding text puts the BOS token first


def _qwen2_split_regex() -> str:
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    return PRETOKENIZE_REGEX


def _is_byte_level(step: dict, use_regex: bool) -> bool:
    return step.get("type") == "ByteLevel" and bool(step.get("use_regex", True)) == use_regex


def pre_tokenizer_name(pre_tokenizer: dict | None) -> str:
    """llama.cpp's name for a `tokenizer.json` pre-tokenizer: `gpt-2` (GPT-2's regex), `smollm`
    (every digit alone, then GPT-2's regex) or `qwen2` (Qwen2's own regex)."""
    steps = pre_tokenizer.get("pretokenizers", []) if pre_tokenizer else []
    if pre_tokenizer and pre_tokenizer.get("type") != "Sequence":
        steps = [pre_tokenizer]
    if len(steps) == 1 and _is_byte_level(steps[0], use_regex=True):
        return "gpt-2"
    if len(steps) == 2 and _is_byte_level(steps[1], use_regex=True):
        if steps[0].get("type") == "Digits" and steps[0].get("individual_digits"):
            return "smollm"
    if len(steps) == 2 and _is_byte_level(steps[1], use_regex=False):
        split = steps[0]
        if split.get("type") == "Split" and split.get("pattern", {}).get("Regex") == (
            _qwen2_split_regex()
        ):
            return "qwen2"
    shape = json.dumps(pre_tokenizer)[:120]
    raise SmolGRPOError(
        f"tokenizer: cannot tell llama.cpp how it splits text (pre-tokenizer {shape}); "
        "supported: GPT-2's byte-level split, SmolLM's (digits apart) and Qwen2's"
    )


def gguf_vocabulary(tokenizer, vocab_size: int) -> GGUFVocabulary:
    """The GGUF vocabulary of a fast tokenizer for a model with `vocab_size` embedding rows."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise SmolGRPOError("tokenizer: not a fast tokenizer (no tokenizer.json)")
    spec = json.loads(backend.to_str())
    model = spec["model"]
    if model.get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise SmolGRPOError(
            f"tokenizer: a {model.get('type')} tokenizer; GGUF export needs a byte-level BPE "
            "one (as SmolLM2, Qwen2 and Llama 3 have)"
        )
    pre = pre_tokenizer_name(spec.get("pre_tokenizer"))
    added = backend.get_added_tokens_decoder()  # id -> AddedToken
    by_id = {index: token for token, index in model["vocab"].items()}
    by_id.update({index: added_token.content for index, added_token in added.items()})
    if max(by_id) >= vocab_size:
        raise SmolGRPOError(
            f"tokenizer: token id {max(by_id)} is past the model's {vocab_size} embedding rows"
        )
    tokens, token_types = [], []
    for index in range(vocab_size):
        if index not in by_id:  # rows the model has beyond the tokenizer (padding)
            tokens.append(f"[PAD{index}]")
            token_types.append(UNUSED)
        elif index in added:
            tokens.append(by_id[index])
            token_types.append(CONTROL if added[index].special else USER_DEFINED)
        else:
            tokens.append(by_id[index])
            token_types.append(NORMAL)
    merges = [" ".join(m) if isinstance(m, list) else m for m in model.get("merges", [])]
    return GGUFVocabulary(
        tokens, token_types, merges, pre, _special_ids(tokenizer), _adds_bos(tokenizer)
    )


def _special_ids(tokenizer) -> dict[str, int]:
    ids = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    return {name: index for name, index in ids.items() if index is not None}


def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos is not None and len(ids) > 0 and ids[0] == bos
