"""The denoiser part: figures of every denoiser at work and its accuracy per strength."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustlab.models.denoised import Denoised
from robustlab.models.denoisers import AdvFilter, Denoiser
from robustlab.report.denoiser_sections import accuracy_tables
from robustlab.study.config import parse_config
from robustlab.study.parts.denoisers import FigureJob, _kernel_pixels, _spread, figure_arrays
from robustlab.study.plan import plan_models
from robustlab.study.runner import run_study
from robustlab.study.store import CellRow, ResultsStore


def test_strengths_are_spread_from_the_smallest_to_the_largest() -> None:
    assert _spread([0.5, 1e-4, 0.1], 4) == [1e-4, 0.1, 0.5]
    twelve = [1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 5e-3, 1e-2, 3e-2, 5e-2, 0.1, 0.3, 0.5]
    assert _spread(twelve, 4) == [1e-4, 3e-3, 3e-2, 0.5]  # indices 0, 4, 7, 11


def test_kernel_pixels_are_the_brightest_the_map_extremes_and_the_centre() -> None:
    image = torch.zeros(1, 6, 8)
    image[0, 1, 2] = 1.0
    values = torch.zeros(6, 8)
    values[4, 7], values[0, 0] = 2.0, -1.0
    assert _kernel_pixels(image, values) == [(1, 2), (4, 7), (0, 0), (3, 4)]


@pytest.mark.parametrize("kind", ["filtering", "additive", "advfilter"])
def test_figure_arrays_hold_images_maps_and_kernels(kind: str) -> None:
    torch.manual_seed(0)
    denoiser = (
        AdvFilter(1, 28, width=4, fusion_hidden=4)
        if kind == "advfilter"
        else Denoiser(1, 28, mode=kind, width=4, kernel_size=3)  # type: ignore[arg-type]
    )
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    model = Denoised(denoiser.eval(), classifier)
    job = FigureJob("k", None, "pgd:steps=2", [0.1, 0.3], 2)  # type: ignore[arg-type]
    arrays = figure_arrays(model, job, torch.rand(2, 1, 28, 28), torch.tensor([1, 2]))
    assert arrays["adversarial"].shape == arrays["denoised"].shape == (2, 2, 1, 28, 28)
    assert arrays["adversarial"].dtype == np.uint8
    maps = {k for k in arrays if k.startswith("map_")}
    kernels = {k for k in arrays if k.startswith("kernels")}
    expected = {
        "filtering": ({"map_uncertainty"}, {"kernels"}),
        "additive": ({"map_perturbation"}, set()),
        "advfilter": (
            {"map_uncertainty_sl", "map_uncertainty_m", "map_weight"},
            {"kernels_sl", "kernels_m"},
        ),
    }[kind]
    assert (maps, kernels) == expected
    decoders = {k for k in arrays if k.startswith("denoised_")}
    assert decoders == ({"denoised_sl", "denoised_m"} if kind == "advfilter" else set())
    for key in kernels:
        assert arrays[key].shape == (2, 4, 1, 3, 3)  # smallest, largest strength
    # The kernel shown at a pixel is the one the denoiser applied there.
    if kind == "filtering":
        assert isinstance(denoiser, Denoiser)
        adversarial = torch.from_numpy(arrays["adversarial"][-1]).float() / 255
        _, prediction = denoiser.forward_with_prediction(adversarial)
        r, c = (int(v) for v in arrays["kernel_pixels"][3])
        kernel = prediction[0, :, r, c].view(3, 3).detach().numpy()
        assert np.allclose(arrays["kernels"][1, 3, 0], kernel, atol=2e-2)  # 8-bit input


def _study(tmp: Path) -> dict[str, Any]:
    quick = {"batch_size": 50, "learning_rate": 0.001}
    examples = {"images": 100, "strengths": [0.1, 0.3], "attack": "pgd:steps=3"}
    shape = {"in_channels": 1, "image_size": 28, "width": 4}
    return {
        "name": "denoisers-part",
        "dataset": {"name": "mnist-sample", "test_limit": 50},
        "models": [
            {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1], **quick},
            {
                "name": "filt",
                "architecture": "huang2021_denoiser",
                "params": shape,
                "parent": "cnn-e1",
                "strategy": {"name": "denoise", "params": examples},
                "epochs": [1],
                **quick,
            },
            {
                "name": "pa",
                "architecture": "huang2021_advfilter",
                "params": {**shape, "fusion_hidden": 4},
                "parent": "cnn-e1",
                "strategy": {
                    "name": "advfilter",
                    "params": {
                        **{k: v for k, v in examples.items() if k != "strengths"},
                        "ynet_epochs": 1,
                        "sl_strengths": [0.1, 0.3],
                        "m_strengths": [0.3],
                    },
                },
                "epochs": [2],
                **quick,
            },
            {"name": "cnn-filt", "denoised": {"denoiser": "filt-e1", "model": "cnn-e1"}},
            {"name": "cnn-pa", "denoised": {"denoiser": "pa-e2", "model": "cnn-e1"}},
        ],
        "attacks": [
            {
                "name": "pgd",
                "params": {"steps": 3},
                "grid": {"eps": [0.1, 0.3]},
                "protocols": ["oblivious", "adaptive"],
            }
        ],
        "batch_size": 50,
        "examples": 0,
        "output": str(tmp / "run"),
    }


@pytest.mark.slow
def test_a_study_with_denoisers_reports_their_figures_and_accuracy(tmp_path: Path) -> None:
    result = run_study(parse_config(_study(tmp_path)))
    report = result.report_md.read_text()
    assert "## Denoisers at work" in report
    for name in ("denoiser-cnn-filt.png", "kernels-cnn-filt.png", "denoiser-cnn-pa.png",
                 "kernels-cnn-pa_sl.png", "kernels-cnn-pa_m.png"):  # fmt: skip
        assert (result.run_dir / "report_files" / name).exists(), name
    assert "cnn-pa (adaptive: through the denoiser)" in report
    assert "Image quality after the defence" in report
    store = ResultsStore(result.run_dir / "results.sqlite")
    assert len(store.cells(kind="denoiser_figure")) == 2


def test_the_accuracy_table_puts_each_denoised_model_under_its_bare_classifier(
    tmp_path: Path,
) -> None:
    models = [m for m in plan_models(parse_config(_study(tmp_path))) if m.composite]

    def row(model: str, protocol: str, eps: float, accuracy: float, label: str = "pgd") -> CellRow:
        return CellRow(
            key=f"{model}{protocol}{eps}", kind="attack", model=model, defense="none",
            setting=label, setting_name="pgd", params={"eps": eps, "steps": 3},
            severity_name="eps", severity=eps, trial=0, n=10, errors=0, accuracy=accuracy,
            protocol=protocol,
        )  # fmt: skip

    rows = [
        row("cnn-e1", "oblivious", 0.1, 0.2),
        row("cnn-e1", "oblivious", 0.3, 0.0),
        row("cnn-filt", "oblivious", 0.1, 0.9),
        row("cnn-filt", "oblivious", 0.3, 0.7),
        # Other entries of the same attack (another label) join the same table.
        row("cnn-filt", "adaptive", 0.1, 0.4, "pgd-adaptive"),
        row("cnn-e1", "transfer", 0.1, 0.2, "pgd-transfer"),
        row("cnn-filt", "transfer", 0.1, 0.9, "pgd-transfer"),
    ]
    (table,) = accuracy_tables(models, rows, {"pgd-transfer": "cnn-e1"})
    assert table.rows == [  # type: ignore[attr-defined]
        ["cnn-e1 (bare, white-box)", "20.0", "0.0"],
        ["cnn-filt (oblivious: made on the bare classifier)", "90.0", "70.0"],
        ["cnn-filt (adaptive: through the denoiser)", "40.0", "–"],
        ["cnn-filt (transfer from cnn-e1)", "90.0", "–"],
    ]
