"""Report section of the certified-robustness part (randomised smoothing, Cohen et al. 2019).

What is certified, a table per model x sigma (accuracy of the smoothed classifier at radius 0,
abstention rate, certified accuracy at the report radii, median radius of the images certified
correct), the certified-accuracy-vs-radius curve per model (one line per sigma) and a finding.
Everything comes from the store: the ``certify`` cells and their per-image records.

Example:
    >>> import numpy as np
    >>> from robustlab.certify import Certificate
    >>> cert = Certificate(np.array([0, 1, -1]), np.array([0.6, 0.2, 0.0]),
    ...                    np.array([0.99, 0.8, 0.3]), np.array([99, 80, 30]), 10, 100, 0.001, 0.25)
    >>> png = curve_figure("cnn", {("none", 0.25): (cert, np.array([0, 1, 1]))}, {0.25: 0.77})
    >>> png[1:4]
    b'PNG'
"""

from __future__ import annotations

import numpy as np

from robustlab.certify import Certificate
from robustlab.certify.radii import representative_radius
from robustlab.report.document import Block, Bullets, Figure, Heading, Paragraph, Table
from robustlab.report.plots import _png, pyplot
from robustlab.study.certify_runner import (
    CSV_NAME,
    CertifyJob,
    CertifyPlan,
    certified_hits,
    finished_certificates,
    median_correct_radius,
)
from robustlab.study.plan import PlannedModel
from robustlab.study.store import ResultsStore

TITLE = "Certified robustness (randomised smoothing)"

#: ``(job, certificate, labels)`` of one finished job.
Finished = tuple[CertifyJob, Certificate, np.ndarray]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def curve_figure(
    model: str,
    curves: dict[tuple[str, float], tuple[Certificate, np.ndarray]],
    largest: dict[float, float],
) -> bytes:
    """Certified accuracy against the L2 radius, one line per sigma (Cohen et al. Figure 7).

    Args:
        model: the model id (title).
        curves: ``(defence label, sigma) -> (certificate, labels)``; the defence is named in
            the legend unless it is ``none``.
        largest: ``sigma -> the largest radius its sampling can certify`` (dotted lines).
    """
    plt = pyplot()
    top = max([*largest.values(), *(float(c.radius.max(initial=0.0)) for c, _ in curves.values())])
    radii = np.linspace(0.0, max(top, 1e-6) * 1.05, 400)
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    colours = plt.get_cmap("tab10")
    sigmas = sorted({sigma for _, sigma in curves})
    styles = ["-", "--", "-.", ":"]
    defenses = list(dict.fromkeys(defense for defense, _ in curves))
    for (defense, sigma), (cert, labels) in sorted(curves.items(), key=lambda c: c[0][1]):
        colour = colours(sigmas.index(sigma) % 10)
        accuracy = 100 * cert.certified_accuracy(labels, radii)
        label = f"sigma = {sigma:g}" if defense == "none" else f"{defense}, sigma = {sigma:g}"
        style = styles[defenses.index(defense) % len(styles)]
        ax.plot(radii, accuracy, color=colour, lw=1.6, ls=style, label=label)
    for sigma in sigmas:
        if sigma in largest:
            ax.axvline(largest[sigma], color=colours(sigmas.index(sigma) % 10), lw=0.8, ls=":")
    ax.set_xlabel("L2 radius r (pixels in [0, 1])")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(0, radii[-1])
    ax.set_title(f"{model}: certified accuracy vs radius")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)


def certify_table(plan: CertifyPlan, finished: list[Finished]) -> Table:
    """One row per finished model x sigma: radius 0, abstentions, the radii, median radius."""
    radii = [r for r in plan.radii if r > 0]
    rows = []
    for job, cert, labels in finished:
        count = len(labels)
        hits = certified_hits(cert, labels, [0.0, *radii])
        median = median_correct_radius(cert, labels)
        rows.append(
            [
                job.model.id,
                job.defense.label,
                f"{job.sigma:g}",
                str(count),
                _pct(hits[0] / count if count else None),
                _pct(float((cert.prediction < 0).mean()) if count else None),
                *(_pct(h / count if count else None) for h in hits[1:].tolist()),
                "–" if median is None else f"{median:.3f}",
            ]
        )
    return Table(
        [
            "model",
            "defence",
            "sigma",
            "images",
            "smoothed clean (r=0)",
            "abstained",
            *(f"r = {r:g}" for r in radii),
            "median radius (correct)",
        ],
        rows,
        caption=(
            "Certified accuracy (%) of each model's smoothed classifier: the share of images "
            "certified correct with a radius of at least r (abstentions count as wrong); r = 0 "
            "is the smoothed classifier's clean accuracy. Abstained: % of images whose top "
            "class was not certified. Median radius over the images certified correct."
        ),
    )


def best_at(finished: list[Finished], radius: float) -> tuple[Finished, float]:
    """The finished job with the highest certified accuracy at ``radius``, and that accuracy."""
    scored = [
        (item, float(item[1].certified_accuracy(item[2], [radius])[0]))
        for item in finished
        if len(item[2])
    ]
    return max(scored, key=lambda pair: pair[1])


def certify_findings(plan: CertifyPlan, store: ResultsStore) -> list[str]:
    """One bullet: the best certified accuracy at the representative radius."""
    finished = [f for f in finished_certificates(plan, store).values() if len(f[2])]
    if not finished:
        return []
    radius = representative_radius(plan.radii)
    (job, cert, labels), accuracy = best_at(finished, radius)
    clean = float(cert.certified_accuracy(labels, [0.0])[0])
    return [
        f"Certified robustness (randomised smoothing): the best certified accuracy at L2 radius "
        f"{radius:g} is {_pct(accuracy)} % ({job.model.id}"
        f"{'' if job.defense.name == 'none' else ' behind ' + job.defense.label} smoothed at "
        f"sigma {job.sigma:g}; its "
        f"smoothed clean accuracy {_pct(clean)} %, abstaining on "
        f"{_pct(float((cert.prediction < 0).mean()))} % of {len(labels)} images)."
    ]


def certify_blocks(
    plan: CertifyPlan, store: ResultsStore, models: list[PlannedModel]
) -> list[Block]:
    """The section, from the stored plan and the jobs that finished."""
    if not plan.jobs:
        return []
    found = finished_certificates(plan, store)
    finished = list(found.values())
    total = len({job.key for job in plan.jobs})
    largest = ", ".join(f"{r:.2f} at sigma {s:g}" for s, r in sorted(plan.largest.items()))
    blocks: list[Block] = [
        Heading(TITLE, 2),
        Paragraph(
            "Randomised smoothing (Cohen, Rosenfeld & Kolter, ICML 2019) turns each model f into "
            "a smoothed classifier g(x) = the class f returns most often on x + N(0, sigma² I). "
            "Per image, CERTIFY picks g's class on n0 noisy copies, counts it on n more and "
            "bounds its probability p from below (one-sided Clopper-Pearson at level 1 - "
            "alpha). When the bound exceeds 1/2, g's prediction provably cannot change under "
            "any perturbation of L2 norm below the radius sigma Φ⁻¹(p_lower), with probability "
            "at least 1 - alpha over the sampling; otherwise CERTIFY abstains. Certified "
            "accuracy at radius r is the share of images certified correct with a radius of at "
            "least r; **abstentions count as wrong**. The guarantee is about g, not the bare "
            "model: f's own prediction may change within the radius, and a model not trained "
            "on Gaussian noise usually certifies poorly (g is often wrong or abstains)."
        ),
        Bullets(
            [
                f"Jobs (model x defence x sigma): {len(found)} of {total}"
                + ("" if len(found) == total else " (INCOMPLETE)")
                + f", each on the first {plan.images} test images, defences "
                f"{', '.join(dict.fromkeys(job.defense.label for job in plan.jobs))}. A model "
                "behind a defence is smoothed as one classifier, classifier(defence(x + "
                "noise)): with a denoiser in front this is Salman et al.'s (2020) denoised "
                "smoothing.",
                f"Sampling: n0 = {plan.n0:,} selection and n = {plan.n:,} estimation draws per "
                f"image (Cohen et al. used 100,000), alpha = {plan.alpha:g}, noise unclipped; "
                "every model sees the same noise at a given sigma.",
                f"The largest radius n draws can certify, sigma x Φ⁻¹(alpha^(1/n)): {largest} "
                "(dotted lines in the figures); beyond it certified accuracy is 0 by "
                "construction, whatever the model.",
                "The defence leaderboard's `smoothed, certified L2 "
                f"r={representative_radius(plan.radii):g}` column is each model's best "
                "certified accuracy over sigma at that radius; it belongs to the smoothed "
                "classifier, not the model ranked, so it is not counted in the worst case.",
                f"Per-image values: `{CSV_NAME}` (prediction -1 = abstained); results.csv has "
                "rows of kind `certify`, one per model, sigma and report radius.",
            ]
        ),
    ]
    if not finished:
        return blocks
    blocks.append(certify_table(plan, finished))
    for model in models:
        curves = {
            (job.defense.label, job.sigma): (cert, labels)
            for job, cert, labels in finished
            if job.model == model
        }
        if not curves:
            continue
        blocks.append(
            Figure(
                f"certify-{model.id}",
                curve_figure(model.id, curves, plan.largest),
                f"{model.id}: certified accuracy of the smoothed classifier against the L2 "
                "radius, one line per sigma (and line style per defence); dotted: the largest "
                "radius each sigma's sampling can certify.",
            )
        )
    return blocks
