"""Report section of the minimal-noise search (aghdam2016 Section 3, Figures 1-2).

For every model: the comparison of aghdam2016's objective (genetic algorithm) with Szegedy et
al.'s (gradient descent) on the same images, the paper's figure of clean image, noise (scaled
for visibility) and noisy image with both predictions, and the distribution of the minimal
noise's PSNR per class. Everything comes from the run directory: the store's
``minimal_noise`` entry and the ``.npz`` files it names.

Example:
    >>> import numpy as np
    >>> png = psnr_by_class_figure({"ga": (np.array([20.0, 22.0]), np.array([0, 1]))}, ["0", "1"])
    >>> png[1:4]
    b'PNG'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robustlab.attack.minimal_noise import MinimalNoiseResult
from robustlab.report.document import Block, Bullets, Figure, Heading, Paragraph, Table
from robustlab.report.plots import _png, pyplot
from robustlab.study.config import StudyConfig
from robustlab.study.minimal_noise_runner import MinimalNoiseJob, finished_jobs, load_job
from robustlab.study.plan import PlannedModel
from robustlab.study.store import ResultsStore

METHOD_NAMES = {
    "ga": "psi + GA (aghdam2016)",
    "szegedy": "Szegedy (projected Adam)",
    "fmn": "FMN (Pintor et al. 2021)",
}
COLOURS = {"ga": "#d62728", "szegedy": "#1f77b4", "fmn": "#2ca02c"}


def _num(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _class_name(classes: Sequence[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else str(index)


def comparison_table(results: dict[str, MinimalNoiseResult], model: str) -> Table:
    """The paper-vs-Szegedy table: one row per method, all on the same images."""
    both = None
    for result in results.values():
        won = result.attacked & result.success
        both = won if both is None else both & won
    rows = []
    for method, result in results.items():
        s = result.summary()
        paired = both is not None and len(results) > 1 and both.any()
        rows.append(
            [
                METHOD_NAMES.get(method, method),
                f"{int(s['attacked'])} / {int(s['images'])}",
                _num(100 * s["success_rate"], 1) + " %",
                _num(s["mean_norm"]),
                _num(float(result.norm[both].mean())) if paired and both is not None else "–",
                _num(s["median_psnr"], 2),
                _num(s["mean_margin"], 4),
                _num(s["seconds_per_image"], 4),
                _num(s["forward_passes_per_image"], 0),
                _num(s["backward_passes_per_image"], 0),
            ]
        )
    return Table(
        [
            "method",
            "attacked / images",
            "success",
            "mean ‖r‖₂",
            "mean ‖r‖₂, both succeeded",
            "median PSNR (dB)",
            "mean margin",
            "s / image",
            "forward passes / image",
            "backward passes / image",
        ],
        rows,
        caption=(
            f"{model}: minimal noise on the same test images. Attacked = classified correctly "
            "without noise; success, ‖r‖₂ (pixels in [0, 1]), PSNR and margin (softmax score "
            "of the winning class minus the true class's) over attacked images the method "
            "flipped; 'both succeeded' pairs the methods on images both flipped."
        ),
    )


def example_figure(
    results: dict[str, MinimalNoiseResult],
    clean: np.ndarray,
    classes: Sequence[str],
    count: int,
) -> bytes | None:
    """Clean image, noise (scaled to its own maximum) and noisy image, per method and image.

    Shows the first ``count`` images that every method flipped (aghdam2016 Figures 1-2).
    """
    plt = pyplot()
    chosen = None
    for result in results.values():
        won = result.attacked & result.success
        chosen = won if chosen is None else chosen & won
    if chosen is None or not chosen.any() or count == 0:
        return None
    picks = np.flatnonzero(chosen)[:count]
    methods = list(results)
    fig, axes = plt.subplots(
        len(picks), 3 * len(methods), figsize=(1.55 * 3 * len(methods), 1.75 * len(picks)),
        squeeze=False,
    )  # fmt: skip
    for row, index in enumerate(picks):
        image = clean[index].astype(np.float32) / 255.0
        for m, method in enumerate(methods):
            result = results[method]
            noise = result.noise[index].astype(np.float32)
            noisy = np.clip(image + noise, 0.0, 1.0)
            scale = float(np.abs(noise).max()) or 1.0
            before = _class_name(classes, int(result.clean_class[index]))
            after = _class_name(classes, int(result.new_class[index]))
            panels = [
                (image, "gray", 0.0, 1.0, f"clean: {before}"),
                (noise, "RdBu_r", -scale, scale, f"noise ×{1 / scale:.1f}"),
                (noisy, "gray", 0.0, 1.0, f"noisy: {after}"),
            ]
            for p, (picture, cmap, low, high, title) in enumerate(panels):
                ax = axes[row][3 * m + p]
                shown = picture.transpose(1, 2, 0)
                if shown.shape[2] == 1:
                    ax.imshow(shown[:, :, 0], cmap=cmap, vmin=low, vmax=high)
                elif cmap == "RdBu_r":  # colour noise: map [-scale, scale] to [0, 1]
                    ax.imshow(np.clip(0.5 + shown / (2 * scale), 0, 1))
                else:
                    ax.imshow(shown)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(title, fontsize=7)
            axes[row][3 * m].set_ylabel(
                f"{METHOD_NAMES.get(method, method)}\n‖r‖={result.norm[index]:.2f}, "
                f"{result.psnr[index]:.1f} dB",
                fontsize=6,
            )
    fig.tight_layout(pad=0.4)
    return _png(fig)


def psnr_by_class_figure(
    series: dict[str, tuple[np.ndarray, np.ndarray]], classes: Sequence[str]
) -> bytes:
    """Box plots of the minimal noise's PSNR per true class, one box per method and class.

    Args:
        series: ``method -> (PSNR values, their true classes)``.
        classes: the class names (the x axis).
    """
    plt = pyplot()
    methods = list(series)
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(classes) * len(methods)), 3.4))
    for m, method in enumerate(methods):
        values, labels = series[method]
        groups = [values[labels == c] for c in range(len(classes))]
        positions = [c + (m - (len(methods) - 1) / 2) * width for c in range(len(classes))]
        present = [i for i, g in enumerate(groups) if len(g)]
        if not present:
            continue
        boxes = ax.boxplot(
            [groups[i] for i in present],
            positions=[positions[i] for i in present],
            widths=width * 0.85,
            patch_artist=True,
            showfliers=True,
            flierprops={"markersize": 2},
        )
        colour = COLOURS.get(method, f"C{m}")
        for patch in boxes["boxes"]:
            patch.set_facecolor(colour)
            patch.set_alpha(0.45)
        ax.plot([], [], color=colour, lw=6, alpha=0.45, label=METHOD_NAMES.get(method, method))
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(list(classes), fontsize=8)
    ax.set_xlabel("true class")
    ax.set_ylabel("PSNR of X + r vs X (dB)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)


def minimal_noise_blocks(
    store: ResultsStore,
    config: StudyConfig,
    jobs: list[MinimalNoiseJob],
    models: list[PlannedModel],
    classes: list[str],
) -> list[Block]:
    """The section, from the stored jobs of the study's ``minimal_noise`` section that finished."""
    section = config.minimal_noise
    if section is None:
        return []
    run_dir = Path(store.path).parent
    done = finished_jobs(store)
    blocks: list[Block] = []
    for model in models:
        results: dict[str, MinimalNoiseResult] = {}
        clean = None
        for job in jobs:
            entry = done.get(job.id)
            if job.model.id != model.id or entry is None or entry["key"] != job.key:
                continue
            if not (run_dir / entry["file"]).is_file():
                continue
            results[job.method], clean = load_job(run_dir, entry)
        if not results or clean is None:
            continue
        blocks += [Heading(model.id, 3), comparison_table(results, model.id)]
        examples = example_figure(results, clean, classes, section.examples)
        if examples is not None:
            blocks.append(
                Figure(
                    f"minimal-noise-{model.id}",
                    examples,
                    f"{model.id}: clean image, minimal noise (scaled to its largest value; red "
                    "brightens, blue darkens) and noisy image, with the predictions, for the "
                    "first images both methods flipped (aghdam2016 Figures 1-2).",
                )
            )
        series = {}
        for method, result in results.items():
            keep = result.attacked & result.success & np.isfinite(result.psnr)
            series[method] = (result.psnr[keep], result.labels[keep])
        if classes and any(len(v) for v, _ in series.values()):
            blocks.append(
                Figure(
                    f"minimal-noise-psnr-{model.id}",
                    psnr_by_class_figure(series, classes),
                    f"{model.id}: PSNR of the minimal misclassifying noise per true class "
                    "(higher = less noise needed); attacked images each method flipped.",
                )
            )
    if not blocks:
        return []
    ga = METHOD_NAMES["ga"]
    return [
        Heading("Minimal noise", 2),
        Paragraph(
            f"The smallest additive noise r that flips the model's decision, on the first "
            f"{section.images} test images. **{ga}** minimises psi(L(X + r), c) + lambda ‖r‖₂ "
            "(psi = beta L[c] while the true class c wins, L[k] - L[c] once class k wins; L the "
            "softmax scores) with a genetic algorithm, aghdam2016's Eqs. 2-3; **Szegedy** "
            "minimises lambda ‖r‖₂ + loss(X + r) with projected Adam and a line search over "
            "lambda (Szegedy et al. 2014, the paper's Eq. 1). Both keep X + r in [0, 1]. Any "
            "other method is a registered minimum-norm attack (FMN: adaptive norm projection "
            "around the decision boundary), measured the same way."
        ),
        Bullets(
            [
                "Forward passes count model evaluations during the search; the gradient "
                "method also runs one backward pass per forward pass (about twice the cost).",
                "Seconds are each image's share of the wall time of the batched search.",
                "Per-image values: `minimal_noise.csv`; noise arrays: `minimal_noise/*.npz`.",
            ]
        ),
        *blocks,
    ]
