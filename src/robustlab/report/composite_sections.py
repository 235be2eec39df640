"""Report blocks for composite models: how a router or an adaptive filter decides.

What the cells of a study cannot show is *why* a composite answers as it does. Its builder
(:mod:`robustlab.study.composites`) measures that once, on the first test images put into each
bin, and stores it on the model card; this module turns it into tables:

- a master-slave router (ghosh2018 Section 4): the master's bin confusion matrix (rows: the bin
  an image was put into; columns: the branch it was routed to) and every branch's accuracy on
  every bin beside the router's, which shows whether routing picks the branch that is best for
  the bin;
- an adaptive filter: the mapping from kind to filter and, when the mapping was learned, the
  accuracy of every candidate filter per kind on the training images it was learned on; the
  detector's confusion matrix and the pipeline's accuracy per kind;
- classifiers behind a denoiser (huang2021): what the denoiser costs on clean images (the
  classifier's accuracy bare and behind it, PSNR and SSIM of the denoised clean images), and
  which classifier each denoiser was trained for.

Example:
    >>> card = {"kind": "master_slave", "decision": "switch", "branches": ["a", "b"],
    ...     "diagnostics": {"images": 10, "bin_names": ["clean", "jpeg"],
    ...     "confusion": [[9, 1], [0, 10]], "branch_accuracy": [[0.9, 0.8], [0.5, 0.7]],
    ...     "router_accuracy": [0.9, 0.7]}}
    >>> [type(b).__name__ for b in composite_blocks({"ms": {"card": card}})]
    ['Heading', 'Heading', 'Paragraph', 'Table', 'Table']
"""

from __future__ import annotations

from typing import Any

from robustlab.report.document import Block, Heading, Paragraph, Table


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _confusion(names: list[str], confusion: list[list[int]], routed_to: str) -> Table:
    rows = []
    for name, counts in zip(names, confusion, strict=True):
        total = max(sum(counts), 1)
        rows.append(
            [
                name,
                *(f"{100 * c / total:.1f}" for c in counts),
                _pct(counts[names.index(name)] / total),
            ]
        )
    return Table(
        ["bin of the image", *(f"{routed_to} {n} (%)" for n in names), "correct (%)"],
        rows,
        caption="Bin confusion: share of each bin's images sent to each branch",
    )


def _router(model_id: str, card: dict[str, Any]) -> list[Block]:
    d = card.get("diagnostics", {})
    branches = card.get("branches", [])
    name = (
        "MS (master chooses the branch)"
        if card["decision"] == "switch"
        else "AMS (the most confident branch answers)"
    )
    blocks: list[Block] = [Heading(f"{model_id}: master-slave router, {name}", 3)]
    if "bin_names" not in d:
        shares = ", ".join(
            f"{b} {_pct(s)}%"
            for b, s in zip(branches, d.get("clean_route_share", []), strict=False)
        )
        blocks.append(
            Paragraph(
                f"Clean test images answered by each branch ({d.get('images', 0)} images): "
                f"{shares}."
            )
        )
        return blocks
    names = d["bin_names"]
    blocks.append(
        Paragraph(
            f"Measured on the first {d['images']} test images, each put into every bin "
            f"(branches: {', '.join(f'{n} = {b}' for n, b in zip(names, branches, strict=False))})."
        )
    )
    blocks.append(_confusion(names, d["confusion"], "to"))
    rows = [
        [name, *(_pct(a) for a in accuracies), _pct(router)]
        for name, accuracies, router in zip(
            names, d["branch_accuracy"], d["router_accuracy"], strict=True
        )
    ]
    blocks.append(
        Table(
            ["bin of the image", *(f"{b} (%)" for b in branches), f"{model_id} (%)"],
            rows,
            caption="Accuracy per bin: every branch alone and the router",
        )
    )
    return blocks


def _adaptive_filter(model_id: str, card: dict[str, Any]) -> list[Block]:
    d = card.get("diagnostics", {})
    names = d.get("bin_names", [])
    mapping = card.get("mapping", {})
    how = f"learned on the {card['learned_on']}" if card.get("learned_on") else "as configured"
    blocks: list[Block] = [
        Heading(f"{model_id}: adaptive filter selection", 3),
        Paragraph(
            f"Detector {card['parents'].get('detector')} picks the filter in front of "
            f"{card['parents'].get('classifier')}; mapping {how}: "
            + ", ".join(f"{k} -> {v}" for k, v in mapping.items())
            + "."
        ),
    ]
    learned = d.get("learned_accuracy") or {}
    if learned:
        candidates = list(next(iter(learned.values())))
        blocks.append(
            Table(
                ["kind", *(f"{c} (%)" for c in candidates), "chosen"],
                [[k, *(_pct(v[c]) for c in candidates), mapping[k]] for k, v in learned.items()],
                caption="Accuracy of the classifier behind each candidate filter, per kind "
                "(training images: the data the mapping was chosen on)",
            )
        )
    if names:
        blocks.append(_confusion(names, d["confusion"], "as"))
        blocks.append(
            Table(
                ["kind of the image", f"{model_id} (%)"],
                [[n, _pct(a)] for n, a in zip(names, d["pipeline_accuracy"], strict=True)],
                caption=f"Accuracy per kind on the first {d['images']} test images",
            )
        )
    return blocks


def _denoised(cards: dict[str, dict[str, Any]]) -> list[Block]:
    """One table: every classifier behind a denoiser, on clean test images."""
    rows = []
    for model_id, card in cards.items():
        d = card.get("diagnostics", {})
        trained_for = card.get("trained_for")
        own = trained_for == card.get("classifier")
        rows.append(
            [
                model_id,
                card.get("denoiser", ""),
                card.get("classifier", "") + ("" if own else f" (trained for {trained_for})"),
                _pct(d["clean_accuracy_bare"]),
                _pct(d["clean_accuracy_denoised"]),
                f"{d['psnr_denoised_clean']:.1f}",
                f"{d['ssim_denoised_clean']:.3f}",
            ]
        )
    images = next(iter(cards.values())).get("diagnostics", {}).get("images", 0)
    return [
        Heading("Classifiers behind a denoiser", 3),
        Table(
            [
                "model",
                "denoiser",
                "classifier",
                "clean, bare (%)",
                "clean, denoised (%)",
                "PSNR of denoised clean (dB)",
                "SSIM",
            ],
            rows,
            caption=f"What the denoiser costs on the first {images} clean test images (PSNR "
            "capped at 100 dB where the denoiser returns the image unchanged)",
        ),
    ]


def composite_blocks(models: dict[str, dict[str, Any]]) -> list[Block]:
    """The blocks for every composite of a study (``store.models()``: id -> path and card)."""
    blocks: list[Block] = []
    denoised: dict[str, dict[str, Any]] = {}
    for model_id, entry in models.items():
        card = entry.get("card", {})
        if card.get("kind") == "master_slave":
            blocks += _router(model_id, card)
        elif card.get("kind") == "adaptive_filter":
            blocks += _adaptive_filter(model_id, card)
        elif card.get("kind") == "denoised" and "diagnostics" in card:
            denoised[model_id] = card
    if denoised:
        blocks += _denoised(denoised)
    if blocks:
        blocks.insert(0, Heading("How the composite models decide", 2))
    return blocks
