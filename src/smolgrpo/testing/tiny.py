"""Tiny random models and a character tokenizer, built in-process: no network, no files.

The tests, `benchmarks/gpu_proof.py --tiny` and the bad-input demos run the whole pipeline on
these. The tokenizer maps printable ASCII characters to ids, so any text round-trips; the models
are two layers of width 32, which train a step in milliseconds.
"""

from __future__ import annotations

import string

SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_ARCHITECTURES = {  # name -> (config class, model class, extra config keys)
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),  # fused qkv_proj and gate_up_proj
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 8}),  # scaled embeddings
}


def build_char_tokenizer():
    """A word-level tokenizer over single characters, with SmolLM2's chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    characters = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + characters)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny_architecture(
    name: str, vocab_size: int, seed: int = 0, max_position_embeddings: int = 1024
):
    """A two-layer, width-32 model of one of TINY_ARCHITECTURES, random weights from `seed`."""
    import torch
    import transformers

    config_class, model_class, extra = TINY_ARCHITECTURES[name]
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
        **extra,
    )
    model = getattr(transformers, model_class)(config)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    return model


def build_tiny_model(vocab_size: int, seed: int = 0, max_position_embeddings: int = 1024):
    """A two-layer Llama of width 32 (SmolLM2's architecture)."""
    return build_tiny_architecture("llama", vocab_size, seed, max_position_embeddings)
