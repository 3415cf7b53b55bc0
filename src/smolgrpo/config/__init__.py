"""The recipe: dataclasses with defaults, YAML and --set parsing, validation."""
