"""Report blocks for classifiers behind trained denoisers (huang2021 Tables 1, 3, 4; Figs. 2-4).

- One table per attack: robust accuracy per strength of every classifier behind a denoiser
  under each protocol the study ran, under its bare classifier's row (huang2021's "Acc. after
  Attack"). The oblivious rows are the paper's protocol (examples made on the bare classifier,
  then denoised); the adaptive rows attack denoiser and classifier together.
- Per denoised model, a montage per strength of the adversarial images, the denoised images
  and what the denoiser predicts per pixel (uncertainty maps, Eq. 10; for AdvFilter both
  decoders' maps and the fusion weight), from :mod:`robustlab.study.parts.denoisers`.
- The predicted kernels at four pixels (Figure 4).

Example:
    >>> png = kernel_figure(np.zeros((2, 2, 1, 3, 3), np.float32), [(0, 0), (1, 1)],
    ...                     np.zeros((1, 4, 4), np.uint8), ["a", "b"], ["small", "large"])
    >>> png[1:4]
    b'PNG'
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from robustlab.report.document import Block, Figure, Heading, Paragraph, Table
from robustlab.report.plots import _png, montage_figure, pyplot
from robustlab.study.plan import PlannedModel
from robustlab.study.store import CellRow, ResultsStore

_MAP_TITLES = {
    "map_uncertainty": "uncertainty (Eq. 10)",
    "map_perturbation": "|predicted inverse perturbation|",
    "map_uncertainty_sl": "uncertainty, φ_sl",
    "map_uncertainty_m": "uncertainty, φ_m",
    "map_weight": "fusion weight W (φ_sl)",
}
_PIXELS = ["brightest", "largest map value", "smallest map value", "centre"]
_PROTOCOL_TEXT = {
    "oblivious": "oblivious: made on the bare classifier",
    "adaptive": "adaptive: through the denoiser",
}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _attack_key(row: CellRow) -> tuple[str, str]:
    """An attack up to its strength: its name and its other parameters (labels merged)."""
    fixed = {k: v for k, v in sorted(row.params.items()) if k != "eps"}
    return row.setting_name, ", ".join(f"{k}={v}" for k, v in fixed.items())


def accuracy_tables(
    models: Sequence[PlannedModel],
    rows: Sequence[CellRow],
    sources: dict[str, str] | None = None,
) -> list[Block]:
    """Robust accuracy per strength: each bare classifier, then the models behind denoisers.

    Cells of one attack (name and parameters but eps) share a table whatever their label, so
    a study's oblivious, adaptive and transfer entries of one PGD sit side by side.
    ``sources`` maps the label of a transfer entry to the model its examples come from.
    """
    sources = sources or {}
    tables: dict[tuple[str, str], dict[tuple[str, str], dict[float, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for row in rows:
        if row.kind != "attack" or row.defense != "none" or row.severity_name != "eps":
            continue
        if row.severity is None:
            continue
        how = row.protocol
        if how == "transfer":
            how = f"transfer from {sources.get(row.setting, '?')}"
        tables[_attack_key(row)][(row.model, how)][row.severity] = row.accuracy
    blocks: list[Block] = []
    for (name, fixed), series in tables.items():
        columns = sorted({eps for values in series.values() for eps in values})

        def line(
            label: str, values: dict[float, float], columns: list[float] = columns
        ) -> list[str]:
            return [label, *(_pct(values[e]) if e in values else "–" for e in columns)]

        body: list[list[str]] = []
        shown: set[str] = set()
        for model in models:
            classifier = model.parent_ids.get("classifier", "")
            if classifier not in shown:
                shown.add(classifier)
                # Without a defence, oblivious and adaptive attack the bare classifier alike.
                white_box = {
                    **series.get((classifier, "adaptive"), {}),
                    **series.get((classifier, "oblivious"), {}),
                }
                if white_box:
                    body.append(line(f"{classifier} (bare, white-box)", white_box))
                for (owner, how), values in series.items():
                    if (
                        owner == classifier
                        and how.startswith("transfer")
                        and (how != f"transfer from {classifier}")
                    ):
                        body.append(line(f"{classifier} (bare, {how})", values))
            for (owner, how), values in series.items():
                if owner == model.id:
                    body.append(line(f"{model.id} ({_PROTOCOL_TEXT.get(how, how)})", values))
        if any(r[0].startswith(m.id + " (") for r in body for m in models):
            blocks.append(
                Table(
                    ["model", *(f"eps={e:g}" for e in columns)],
                    body,
                    caption=f"{name} ({fixed or 'defaults'}): robust accuracy (%) per strength, "
                    "no input defence",
                )
            )
    return blocks


def kernel_figure(
    kernels: np.ndarray,
    pixels: Sequence[tuple[int, int]],
    image: np.ndarray,
    titles: Sequence[str],
    rows: Sequence[str],
) -> bytes:
    """The image with the chosen pixels marked; per row, the K x K kernel predicted at each.

    ``kernels`` is ``(rows, pixels, C, K, K)`` (e.g. the smallest and the largest strength);
    the first channel is drawn.
    """
    plt = pyplot()
    n_rows, n_cols = len(rows), len(pixels) + 1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 2.0 * n_rows), squeeze=False)
    shown = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    for r in range(n_rows):
        axes[r][0].axis("off")
    axes[0][0].axis("on")
    axes[0][0].imshow(shown, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    for k, (pr, pc) in enumerate(pixels):
        axes[0][0].scatter([pc], [pr], s=40, marker="s", facecolors="none", edgecolors=f"C{k}")
    axes[0][0].set_title("input", fontsize=8)
    bound = max(float(np.abs(kernels[:, :, 0]).max()), 1e-6)  # one colour scale for all
    for r, row_title in enumerate(rows):
        axes[r][1].set_ylabel(row_title, fontsize=8)
        for k in range(len(pixels)):
            ax = axes[r][k + 1]
            kernel = kernels[r, k, 0]
            ax.imshow(kernel, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
            if kernel.size <= 25:
                for (i, j), value in np.ndenumerate(kernel):
                    colour = "white" if abs(value) > 0.6 * bound else "black"
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                            color=colour)  # fmt: skip
            if r == 0:
                ax.set_title(titles[k] if k < len(titles) else "", fontsize=8, color=f"C{k}")
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    return _png(fig)


def _map_strip(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(n, H, W)`` maps as ``(n, 1, H, W)`` uint8 images, ``low`` black and ``high`` white."""
    span = max(high - low, 1e-12)
    strip: np.ndarray = (np.clip((values - low) / span, 0, 1) * 255).round()
    return strip.astype(np.uint8)[:, None]


def figure_blocks(
    model_id: str, strengths: Sequence[float], arrays: dict[str, np.ndarray]
) -> list[Block]:
    """The montage and kernel figures of one denoised model."""
    maps = [k for k in _MAP_TITLES if k in arrays]
    outputs = [k for k in ("denoised", "denoised_sl", "denoised_m") if k in arrays]
    names = {"denoised": "denoised", "denoised_sl": "φ_sl alone", "denoised_m": "φ_m alone"}
    columns = ["adversarial", *(names[k] for k in outputs), *(_MAP_TITLES[k] for k in maps)]
    # Each map column on its own scale (its smallest value black, its largest white): the
    # uncertainty of near-identity kernels varies little around 1; the weight map on 0-1.
    scales = {
        k: (0.0, 1.0) if k == "map_weight" else (float(arrays[k].min()), float(arrays[k].max()))
        for k in maps
    }
    montage_rows = []
    for s, eps in enumerate(strengths):
        strips = [arrays["adversarial"][s], *(arrays[k][s] for k in outputs)]
        strips += [_map_strip(arrays[k][s], *scales[k]) for k in maps]
        montage_rows.append((f"eps={eps:g}", strips))
    blocks: list[Block] = [
        Figure(
            f"denoiser-{model_id}",
            montage_figure(montage_rows, columns),
            f"{model_id}: adversarial examples made on the bare classifier, what the denoiser "
            "makes of them, and what it predicts per pixel (each map column from its smallest "
            "value, black, to its largest, white, over all strengths; the weight map on 0-1) "
            "(huang2021 Figures 2 and 3).",
        )
    ]
    pixels = [tuple(int(v) for v in p) for p in arrays.get("kernel_pixels", [])]
    for key, decoder in (("kernels", ""), ("kernels_sl", " φ_sl"), ("kernels_m", " φ_m")):
        if key in arrays:
            blocks.append(
                Figure(
                    f"kernels-{model_id}{key[7:]}",
                    kernel_figure(
                        arrays[key],
                        pixels,  # type: ignore[arg-type]
                        arrays["adversarial"][-1][0],
                        _PIXELS,
                        [f"eps={strengths[0]:g}", f"eps={strengths[-1]:g}"],
                    ),
                    f"{model_id}{decoder}: the kernel predicted at four pixels of the first "
                    f"image (shown at eps={strengths[-1]:g}), at the smallest and the largest "
                    "strength (huang2021 Figure 4; first channel; one colour scale).",
                )
            )
    return blocks


def denoiser_blocks(
    jobs: Sequence[tuple[PlannedModel, str, Sequence[float]]],
    store: ResultsStore,
    attack_rows: Sequence[CellRow],
    sources: dict[str, str] | None = None,
) -> list[Block]:
    """The denoiser section: accuracy per strength, then every denoiser's figures.

    ``attack_rows`` are the cells of the study's current attack plan, ``sources`` the
    source model of each transfer entry (by label).
    """
    models = [model for model, _, _ in jobs]
    blocks: list[Block] = accuracy_tables(models, attack_rows, sources)
    for model, key, strengths in jobs:
        arrays = store.records(key)
        if arrays is not None:
            blocks += figure_blocks(model.id, strengths, arrays)
    if not blocks:
        return []
    return [
        Heading("Denoisers at work", 2),
        Paragraph(
            "Classifiers behind a trained denoiser (huang2021). The oblivious rows are the "
            "paper's protocol: the examples are made against the bare classifier and then "
            "denoised; the adaptive rows attack the denoiser and the classifier together, which "
            "is what an attacker who knows the defence does. Quote the lower."
        ),
        *blocks,
    ]
