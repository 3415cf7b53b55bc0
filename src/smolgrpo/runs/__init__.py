"""The run folder: checkpoints, signals, guards, metrics log, progress, trackers."""
