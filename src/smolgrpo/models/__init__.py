"""Loading models and tokenizers (hub, folder, GGUF, embedded), GGUF export, FSDP, ranks."""
