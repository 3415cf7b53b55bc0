"""Tiny random models and a character tokenizer, built in-process: no network, no files.

The tests, `benchmarks/gpu_proof.py --tiny` and the bad-input demos run the whole pipeline on
these. The tokenizer maps printable ASCII characters to ids, so any text round-trips; the models
are two layers of width 32, which train a step in milliseconds. GGUF export needs a real
byte-level BPE tokenizer: `build_bpe_tokenizer` trains a small one on a few sentences.
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


BPE_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2
BPE_CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.",
    "How many clips did Natalia sell altogether in April and May? The answer is 72.",
    "<reasoning>\nShe sold 48 / 2 = 24 clips in May.\n</reasoning>\n<answer>\n72\n</answer>",
    "You are a careful math tutor. Solve the problem step by step.",
    "Weng earns $12 an hour for babysitting. Yesterday, she did 50 minutes of babysitting.",
]
BPE_SPLITS = ("gpt-2", "smollm", "qwen2")  # how text is split before the merges (llama.cpp names)


def build_bpe_tokenizer(split: str = "gpt-2", vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on BPE_CORPUS, with ChatML's special tokens and the
    pre-tokenizer of GPT-2 (`gpt-2`), SmolLM2 (`smollm`: digits apart) or Qwen2 (`qwen2`)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split != "qwen2")
    backend = Tokenizer(models.BPE())
    if split == "gpt-2":
        backend.pre_tokenizer = byte_level
    elif split == "smollm":
        digits = pre_tokenizers.Digits(individual_digits=True)
        backend.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level])
    else:
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        split_regex = pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated")
        backend.pre_tokenizer = pre_tokenizers.Sequence([split_regex, byte_level])
        backend.normalizer = normalizers.NFC()
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=BPE_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(BPE_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
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
