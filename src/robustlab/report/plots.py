"""Figures of the report, rendered with matplotlib (Agg) to PNG bytes.

Example:
    >>> import numpy as np
    >>> png = montage_figure([("clean", [np.zeros((2, 1, 8, 8), dtype=np.uint8)])], ["input"])
    >>> png[1:4]
    b'PNG'
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from robustlab.report.summary import Stat, StatKey

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LINESTYLES = ["-", "--", ":", "-."]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend, imported on first use.

    Matplotlib takes about 0.4 s to import; a module that only *may* draw (a study part in a
    Ray worker, the command line's ``--help``) must not pay for it.

    Example:
        >>> pyplot().get_backend().lower()
        'agg'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Figure) -> bytes:
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def accuracy_curves(
    stats: dict[StatKey, Stat],
    models: Sequence[str],
    defenses: Sequence[str],
    degradations: Sequence[tuple[str, str | None, list[float]]],
) -> bytes:
    """Accuracy vs severity, one panel per degradation, one line per model x defence.

    With several defences the colour is the defence and the line style the model; with one
    defence (model comparisons such as ghosh2018's Figure 3: baseline, MS, AMS) every model
    gets its own colour and a solid line.

    Args:
        stats: aggregated statistics.
        models: model ids (line style, or colour with one defence).
        defenses: defence labels (colour).
        degradations: ``(label, swept parameter, severities)`` per panel.
    """
    plt = pyplot()
    panels = max(len(degradations), 1)
    cols = min(panels, 4)
    rows = -(-panels // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    axes = grid.ravel()
    for ax in axes[panels:]:
        ax.axis("off")
    by_model = len(defenses) == 1
    colours = plt.get_cmap("tab20" if by_model and len(models) > 10 else "tab10")
    ncolours = 20 if by_model and len(models) > 10 else 10
    for ax, (label, swept, severities) in zip(axes, degradations, strict=False):
        for mi, model in enumerate(models):
            style = "-" if by_model else LINESTYLES[mi % len(LINESTYLES)]
            for di, defense in enumerate(defenses):
                colour = colours((mi if by_model else di) % ncolours)
                points = [(s, stats.get((model, defense, label, s))) for s in severities]
                xs = [s for s, st in points if st is not None]
                ys = np.array([st.accuracy_mean for _, st in points if st is not None])
                sd = np.array([st.accuracy_std for _, st in points if st is not None])
                if not xs:
                    continue
                ax.plot(
                    xs, ys, marker="o", ms=3.5, color=colour, linestyle=style,
                    label=model if by_model else f"{defense} · {model}",
                )  # fmt: skip
                if sd.any():
                    ax.fill_between(xs, ys - sd, ys + sd, color=colour, alpha=0.18)
            clean = stats.get((model, "none", "clean", None))
            if clean is not None:
                ax.axhline(
                    clean.accuracy_mean,
                    color=colours(mi % ncolours) if by_model else "grey",
                    lw=0.8,
                    ls=":" if by_model else LINESTYLES[mi % 4],
                )
        ax.set_title(label)
        ax.set_xlabel(swept or "severity")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    legend_rows = (len(labels) - 1) // 4 + 1
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False)
    fig.tight_layout(rect=(0, 0.035 * legend_rows / rows + 0.02, 1, 1))
    return _png(fig)


def _tile(images: np.ndarray) -> np.ndarray:
    """``(K, C, H, W)`` uint8 -> one ``(H, K*W + gaps, C)`` strip."""
    k, c, h, w = images.shape
    gap = 2
    strip = np.full((h, k * w + (k - 1) * gap, c), 255, dtype=np.uint8)
    for i in range(k):
        strip[:, i * (w + gap) : i * (w + gap) + w] = images[i].transpose(1, 2, 0)
    return strip


def montage_figure(
    rows: Sequence[tuple[str, Sequence[np.ndarray | None]]], columns: Sequence[str]
) -> bytes:
    """A grid of image strips: one row per setting, one column per stage (input, defences)."""
    plt = pyplot()
    n_rows, n_cols = len(rows), len(columns)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.3 * n_cols, 0.62 * n_rows + 0.4), squeeze=False
    )
    for r, (label, strips) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            images = strips[c] if c < len(strips) else None
            if images is not None:
                tile = _tile(images)
                if tile.shape[2] == 1:
                    ax.imshow(tile[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                else:
                    ax.imshow(tile, interpolation="nearest")
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.3)
    return _png(fig)


def score_scatter(
    psnr_db: np.ndarray,
    score: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    classes: Sequence[str],
    max_points_per_class: int = 6000,
) -> bytes:
    """PSNR vs true-class score, one panel per class; misclassified red, correct grey.

    Large classes are thinned to ``max_points_per_class`` points (evenly, deterministically),
    keeping every misclassified sample so that failures are never hidden.
    """
    plt = pyplot()
    n = len(classes)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.0 * cols, 2.5 * rows), squeeze=False, sharey=True
    )
    for index, name in enumerate(classes):
        ax = axes[index // cols][index % cols]
        mine = labels == index
        wrong = mine & (predicted != labels)
        right = np.flatnonzero(mine & (predicted == labels))
        if len(right) > max_points_per_class:
            right = right[:: -(-len(right) // max_points_per_class)]
        ax.scatter(psnr_db[right], score[right], s=2, c="#9aa3ab", alpha=0.35, linewidths=0)
        ax.scatter(psnr_db[wrong], score[wrong], s=3, c="#d62728", alpha=0.7, linewidths=0)
        ax.set_title(f"{name}  ({int(wrong.sum())} wrong / {int(mine.sum())})", fontsize=8)
        ax.set_xlabel("PSNR (dB)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for index in range(n, rows * cols):
        axes[index // cols][index % cols].axis("off")
    axes[0][0].set_ylabel("score of true class", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def training_level_figure(
    series: Sequence[tuple[str, list[float], list[float], float | None]], axis: str, title: str
) -> bytes:
    """Accuracy against a training level, one line per test setting (cavey Figures A-C).

    Args:
        series: ``(test setting, training levels, accuracies, natural model's accuracy)``.
        axis: the swept training parameter's name (x label).
        title: the panel title.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = plt.get_cmap("tab10")
    for i, (name, xs, ys, reference) in enumerate(series):
        colour = colours(i % 10)
        ax.plot(xs, [100 * y for y in ys], marker="o", color=colour, label=name)
        if reference is not None:
            ax.axhline(100 * reference, color=colour, ls="--", lw=0.8)
    ax.set_xlabel(f"training {axis}")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)
