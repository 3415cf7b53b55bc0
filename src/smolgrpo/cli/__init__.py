"""The `smolgrpo` command line: one module per group of subcommands."""
