"""smolgrpo: teach small language models to reason with GRPO.

The packages follow the pipeline, each importing only those listed before it
(tests/test_import_graph.py enforces the order):

    errors       the one user-error type (one `error:` line, exit 2)
    rewards      reward functions, registry and weights, answer parsing, sandboxed checks
    tasks        problems (GSM8K, JSONL/CSV/hub files, reasoning-gym), prompt templates
    algo         the GRPO tensor math: advantages, log-probs, the clipped loss, KL
    models       loading models and tokenizers (hub, folder, GGUF, embedded), FSDP, ranks
    runs         the run folder: lock, checkpoints, signals, guards, metrics log, trackers
    config       the recipe: dataclasses with defaults, YAML and --set parsing, validation
    generation   sampling completions: decode loop, KV cache, CUDA graphs, calculator, tools
    evaluation   eval on a split, Wilson intervals, pass@k, paired tests
    reporting    report, plots, HTML, compare, model card, push
    training     the GRPO and SFT loops, group collection, the optimizer step
    cli          `smolgrpo eval | sft | train | report | compare | push`
"""

__version__ = "0.1.0"
