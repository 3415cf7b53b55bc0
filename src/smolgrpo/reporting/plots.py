"""The report's plots: one PNG per metric group (reward, accuracy and format, length, KL and
clipping, optimizer, throughput), each a row of panels drawn with matplotlib (Agg, no display)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.reporting.format import (
    EVAL_PREFIX,
    REWARD_PREFIX,
    moving_average,
    reward_components,
    series,
)


@dataclass
class Panel:
    title: str
    ylabel: str
    keys: list[tuple[str, str]]  # (metrics key, legend label)
    percent: bool = False
    skip_if_zero: bool = False  # e.g. KL, logged as 0 when beta = 0 (no reference model)
    smooth: bool = True  # False for a schedule (learning rate): averaging would distort it


def plot_specs(rows: list[dict]) -> dict[str, list[Panel]]:
    """file stem -> its panels; keys that were never logged are dropped later."""
    components = [(key, key[len(REWARD_PREFIX) :]) for key in reward_components(rows)]
    return {
        "reward": [
            Panel("Total reward (weighted sum)", "reward", [("reward_mean", "reward mean")]),
            Panel("Reward components (unweighted)", "mean reward per completion", components),
        ],
        "accuracy_format": [
            Panel(
                "Accuracy and format (training samples)",
                "share of completions",
                [
                    ("accuracy", "accuracy"),
                    ("strict_format_rate", "strict format"),
                    ("soft_format_rate", "soft format"),
                ],
                percent=True,
            ),
            Panel(
                "Periodic eval (greedy, eval split)",
                "share of problems",
                [
                    ("eval/accuracy", "accuracy"),
                    ("eval/accuracy_last_number", "accuracy (last number)"),
                    ("eval/strict_format_rate", "strict format"),
                    ("eval/soft_format_rate", "soft format"),
                ],
                percent=True,
            ),
        ],
        "length": [
            Panel(
                "Completion length",
                "tokens",
                [
                    ("completion_length_mean", "mean (training)"),
                    ("completion_length_max", "max (training)"),
                    ("eval/mean_completion_tokens", "mean (eval)"),
                ],
            ),
            Panel(
                "Truncated completions (hit the length limit)",
                "share of completions",
                [("truncation_rate", "training"), ("eval/truncation_rate", "eval")],
                percent=True,
            ),
        ],
        "kl_clip": [
            Panel(
                "KL to the reference model (k3 estimator)",
                "KL per token (nats)",
                [("kl", "KL")],
                skip_if_zero=True,
            ),
            Panel(
                "Clipped tokens",
                "share of tokens",
                [("clip_fraction", "clip fraction")],
                percent=True,
            ),
        ],
        "optimizer": [
            Panel("Learning rate", "learning rate", [("learning_rate", "lr")], smooth=False),
            Panel("Gradient norm (before clipping)", "L2 norm", [("grad_norm", "grad norm")]),
        ],
        "throughput": [
            Panel(
                "Generation throughput",
                "generated tokens per second",
                [("tokens_per_s", "tokens/s")],
            ),
        ],
    }


def write_plots(
    rows: list[dict], output_dir: Path, smooth: int = 1, notes: dict | None = None
) -> dict[str, Path]:
    """One PNG per entry of `plot_specs` that has data; returns stem -> path. A panel whose
    metrics are all in `notes` (constant by construction) is left out."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    if smooth < 1:
        raise SmolGRPOError(f"--smooth must be at least 1, got {smooth}")
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, panels in plot_specs(rows).items():
        panels = [
            p
            for p in panels
            if _has_data(rows, p) and not all(key in (notes or {}) for key, _ in p.keys)
        ]
        if not panels:
            continue
        figure, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 3.6), squeeze=False)
        for axis, panel in zip(axes[0], panels):
            _draw_panel(axis, rows, panel, smooth)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            if panel.percent:
                axis.yaxis.set_major_formatter(PercentFormatter(1.0))
                axis.set_ylim(*_rate_limits(rows, panel))
        figure.tight_layout()
        path = output_dir / f"{stem}.png"
        figure.savefig(path, dpi=100)  # 2 panels ≈ 1160 px: shown unscaled
        plt.close(figure)
        written[stem] = path
    return written


def _has_data(rows: list[dict], panel: Panel) -> bool:
    values = [v for key, _ in panel.keys for v in series(rows, key)[1]]
    return bool(values) and not (panel.skip_if_zero and not any(values))


def _rate_limits(rows: list[dict], panel: Panel) -> tuple[float, float]:
    """0 at the bottom, room above the highest value: a flat 0% line is not centred on 0."""
    highest = max(v for key, _ in panel.keys for v in series(rows, key)[1])
    top = min(1.0, max(0.1, highest * 1.15)) + 0.02
    return -0.02 * top / 1.02, top


def _draw_panel(axis, rows: list[dict], panel: Panel, smooth: int) -> None:
    smooth = smooth if panel.smooth else 1
    for index, (key, label) in enumerate(panel.keys):
        steps, values = series(rows, key)
        if not steps:
            continue
        color = f"C{index}"
        if key.startswith(EVAL_PREFIX):  # a few points far apart: markers, never smoothed
            axis.plot(steps, values, "o--", color=color, label=label, markersize=5)
        elif smooth > 1 and len(values) > 1:
            axis.plot(steps, values, color=color, alpha=0.25, linewidth=1)
            axis.plot(steps, moving_average(values, smooth), color=color, label=label)
        else:
            axis.plot(
                steps, values, color=color, label=label, marker="." if len(steps) < 30 else ""
            )
    smoothed = smooth > 1 and any(not key.startswith(EVAL_PREFIX) for key, _ in panel.keys)
    title = panel.title + (f" — {smooth}-step moving average" if smoothed else "")
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("training step")
    axis.set_ylabel(panel.ylabel)
    axis.grid(alpha=0.3)
    if len(panel.keys) > 1:  # below the axes: inside, it hides the lines it names
        axis.legend(
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=min(3, len(panel.keys)),
            frameon=False,
        )
