"""Loading models and tokenizers (hub, folder, GGUF, embedded), FSDP, ranks."""
