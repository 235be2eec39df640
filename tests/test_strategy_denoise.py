"""``denoise``: a pixel denoiser trained on a frozen classifier's adversarial examples."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import robustlab.train.adversarial_examples as examples_module
from robustlab.errors import ConfigError, InvalidParameterError
from robustlab.models.denoised import Denoised
from robustlab.models.denoisers import Denoiser, image_loss, semantic_loss
from robustlab.study.config import parse_config
from robustlab.study.runner import run_study
from robustlab.study.store import ResultsStore
from robustlab.train.adversarial_examples import AdversarialExamples
from robustlab.train.strategy import StepContext, create_strategy


def _examples(strengths: tuple[float, ...], n: int = 4) -> AdversarialExamples:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(n, 1, 28, 28, generator=g)
    deltas = [
        ((torch.rand(n, 1, 28, 28, generator=g) * 2 - 1) * s).to(torch.float16) for s in strengths
    ]
    return AdversarialExamples(
        clean, torch.arange(n) % 10, deltas, strengths, [0.5] * len(strengths)
    )


def _classifier() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 10)
    ).eval()


def _context() -> StepContext:
    return StepContext(epoch=0, total_epochs=1, generator=torch.Generator(), num_classes=10)


def _prepared(strategy: Any, examples: AdversarialExamples) -> Any:
    strategy.examples, strategy.classifier = examples, _classifier()
    return strategy


def test_the_image_loss_compares_the_denoised_examples_with_their_clean_images() -> None:
    examples = _examples((0.1, 0.3))
    strategy = _prepared(create_strategy("denoise", strengths=[0.1, 0.3]), examples)
    torch.manual_seed(0)
    net = Denoiser(1, 28, width=4)
    rows = torch.tensor([0, 5, 7])
    x = examples.adversarial(rows)
    loss = strategy.loss(net, x, rows, _context())
    assert torch.allclose(loss, image_loss(examples.clean(rows), net(x)))
    semantic = _prepared(
        create_strategy("denoise", loss="semantic", layer="1", strengths=[0.1, 0.3]), examples
    )
    expected = semantic_loss(semantic.classifier, "1", examples.clean(rows), net(x))
    assert torch.allclose(semantic.loss(net, x, rows, _context()), expected)


def test_each_head_learns_only_from_its_strengths() -> None:
    examples = _examples((1e-3, 0.1))
    strategy = _prepared(create_strategy("denoise", head_strengths=[[1e-3], [0.1]]), examples)
    torch.manual_seed(0)
    net = Denoiser(1, 28, width=4, heads=2)
    rows = torch.arange(4)  # strength 1e-3 only: head 0's examples
    strategy.loss(net, examples.adversarial(rows), rows, _context()).backward()
    assert net.heads[0].weight.grad is not None and net.heads[0].weight.grad.abs().sum() > 0
    assert net.heads[1].weight.grad is None or net.heads[1].weight.grad.abs().sum() == 0
    assert strategy.head_of(torch.tensor([1, 0])).tolist() == [1, 0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"loss": "huber"}, "image or semantic"),
        ({"loss": "semantic"}, "name it with layer"),
        ({"layer": "1"}, "layer belongs to loss: semantic"),
        ({"strengths": [0.1, 0.1]}, "distinct eps"),
        ({"strengths": [2.0]}, "distinct eps"),
        ({"strengths": [0.1], "head_strengths": [[0.1]]}, "not both"),
        ({"head_strengths": [[0.1], [0.1]]}, "distinct eps"),
        ({"attack": "pgd:eps=0.3"}, "must not set eps"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        create_strategy("denoise", **params)


def test_a_perturbation_trains_on_degraded_clean_images() -> None:
    noise = {"degradation": "gaussian_noise", "levels": [0.2, 0.4]}
    strategy = create_strategy("denoise", perturbation=noise)
    strategy.classifier = _classifier()  # type: ignore[attr-defined]
    torch.manual_seed(0)
    net = Denoiser(1, 28, width=4)
    x = torch.rand(3, 1, 28, 28)
    context = StepContext(
        epoch=0, total_epochs=1, generator=torch.Generator().manual_seed(5), num_classes=10
    )
    loss = strategy.loss(net, x, torch.zeros(3, dtype=torch.long), context)
    noisy = strategy.perturbation.apply(x, torch.Generator().manual_seed(5))  # type: ignore[attr-defined]
    assert torch.allclose(loss, image_loss(x, net(noisy)))
    assert "gaussian_noise" in strategy.describe()
    with pytest.raises(InvalidParameterError, match="belong to adversarial training examples"):
        create_strategy("denoise", perturbation=noise, strengths=[0.1])


def test_a_network_that_does_not_fit_the_strategy_is_refused() -> None:
    examples = _examples((0.1,))
    strategy = _prepared(create_strategy("denoise", head_strengths=[[0.1]]), examples)
    rows = torch.arange(2)
    with pytest.raises(InvalidParameterError, match="huang2021_denoiser"):
        strategy.loss(nn.Identity(), examples.adversarial(rows), rows, _context())
    two = _prepared(create_strategy("denoise", strengths=[0.1]), examples)
    with pytest.raises(InvalidParameterError, match="2 heads"):
        two.loss(Denoiser(1, 28, width=4, heads=2), examples.adversarial(rows), rows, _context())


def _study(tmp: Path, **overrides: Any) -> dict[str, Any]:
    quick = {"batch_size": 50, "learning_rate": 0.001}
    examples = {
        "images": 500,
        "strengths": [0.05, 0.1, 0.2],
        "attack": "pgd:steps=10,rel_step_size=0.1",
    }
    study: dict[str, Any] = {
        "name": "denoise-test",
        "dataset": {"name": "mnist-sample", "test_limit": 300},
        "models": [
            {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [2], **quick},
            {
                "name": "filt",
                "architecture": "huang2021_denoiser",
                "params": {"in_channels": 1, "image_size": 28, "width": 8},
                "parent": "cnn-e2",
                "strategy": {"name": "denoise", "params": examples},
                "epochs": [3],
                **quick,
            },
            {
                "name": "add",
                "architecture": "huang2021_denoiser",
                "params": {"in_channels": 1, "image_size": 28, "width": 8, "mode": "additive"},
                "parent": "cnn-e2",
                "strategy": {"name": "denoise", "params": {**examples, "strengths": [0.2]}},
                "epochs": [1],
                **quick,
            },
            {"name": "cnn-filt", "denoised": {"denoiser": "filt-e3", "model": "cnn-e2"}},
        ],
        "attacks": [
            {
                "name": "pgd",
                "params": {"steps": 10, "rel_step_size": 0.1},
                "grid": {"eps": [0.1]},
                "protocols": ["oblivious", "adaptive"],
            }
        ],
        "batch_size": 300,
        "examples": 0,
        "output": str(tmp / "run"),
    }
    study.update(overrides)
    return study


def test_the_config_checks_what_a_denoiser_stands_on(tmp_path: Path) -> None:
    parse_config(_study(tmp_path))
    bad = _study(tmp_path)
    del bad["models"][1]["architecture"]
    with pytest.raises(ConfigError, match="give its architecture"):
        parse_config(bad)
    bad = _study(tmp_path)
    del bad["models"][1]["parent"]
    with pytest.raises(ConfigError, match="depends on a trained model"):
        parse_config(bad)
    bad = _study(tmp_path)
    bad["models"][3]["denoised"] = {"denoiser": "cnn-e2", "model": "filt-e3"}
    with pytest.raises(ConfigError, match="denoiser 'cnn-e2' must be a denoiser"):
        parse_config(bad)
    bad = _study(tmp_path)
    bad["models"][2]["parent"] = "filt-e3"
    with pytest.raises(ConfigError, match="classifier 'filt-e3' must be a classifier"):
        parse_config(bad)


@pytest.mark.slow
def test_two_denoisers_share_the_examples_and_the_denoiser_defends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []
    attack = examples_module._attack

    def counting(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, float]:
        calls.append(float(args[5]))
        return attack(*args, **kwargs)

    monkeypatch.setattr(examples_module, "_attack", counting)
    result = run_study(parse_config(_study(tmp_path)))
    # filt trains on 0.05, 0.1 and 0.2, add on 0.2: each strength generated once for both.
    assert sorted(calls) == [0.05, 0.1, 0.2]
    with result.results_csv.open() as f:
        rows = list(csv.DictReader(f))
    attacked = {
        (r["model"], r["protocol"]): float(r["accuracy"]) for r in rows if r["kind"] == "attack"
    }
    bare = attacked[("cnn-e2", "oblivious")]
    # huang2021's protocol: examples made on the bare classifier, then denoised.
    assert attacked[("cnn-filt", "oblivious")] > bare + 0.15, attacked
    assert attacked[("cnn-filt", "worst-case")] <= attacked[("cnn-filt", "oblivious")]
    report = result.report_md.read_text()
    assert "denoise(" in report and "cnn-e2 (classifier)" in report


def test_the_denoised_model_is_the_classifier_behind_the_denoiser() -> None:
    torch.manual_seed(0)
    denoiser, classifier = Denoiser(1, 28, width=4, heads=2), _classifier()
    model = Denoised(denoiser, classifier, head=1)
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(model(x), classifier(denoiser(x, head=1)))
    assert model.oblivious_source is classifier
    with pytest.raises(InvalidParameterError, match="head 2 does not exist"):
        Denoised(denoiser, classifier, head=2)
    with pytest.raises(InvalidParameterError, match="must return images"):
        Denoised(nn.Flatten(), classifier).denoise(x)


def test_each_epoch_count_of_the_classifier_has_its_own_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import robustlab.train.strategies.denoise as denoise_module

    folders: list[str] = []
    load = denoise_module.load_examples

    def recording(parent: Any, split: Any, spec: Any, who: str) -> AdversarialExamples:
        folders.append(spec.key(parent.key, parent.data_fingerprint))
        assert parent.key.endswith(("-e1", "-e2"))
        return load(parent, split, spec, who)

    monkeypatch.setattr(denoise_module, "load_examples", recording)
    tiny = {"images": 20, "strengths": [0.1], "attack": "pgd:steps=1"}
    denoiser = {
        "architecture": "huang2021_denoiser",
        "params": {"in_channels": 1, "image_size": 28, "width": 2},
        "strategy": {"name": "denoise", "params": tiny},
        "epochs": [1],
        "batch_size": 10,
    }
    study = {
        "name": "denoise-epochs",
        "dataset": {"name": "mnist-sample", "test_limit": 20},
        "models": [
            {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1, 2], "batch_size": 500},
            {"name": "d1", "parent": "cnn-e1", **denoiser},
            {"name": "d2", "parent": "cnn-e2", **denoiser},
            {"name": "c1", "denoised": {"denoiser": "d1-e1", "model": "cnn-e1"}},
            {"name": "c2", "denoised": {"denoiser": "d2-e1", "model": "cnn-e2"}},
        ],
        "output": str(tmp_path / "run"),
    }
    run_study(parse_config(study))
    # The classifier's cache key is one lineage for both lengths; the examples are not.
    assert len(folders) == 2 and folders[0] != folders[1]


def test_a_denoised_entry_fits_its_denoisers_heads_and_decoders(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study["models"][3]["denoised"]["head"] = 1
    with pytest.raises(ConfigError, match="head 1 does not exist"):
        parse_config(study)
    study = _study(tmp_path)
    study["models"][3]["denoised"]["output"] = "sl"
    with pytest.raises(ConfigError, match="picks a decoder of an AdvFilter"):
        parse_config(study)
    study = _study(tmp_path)
    study["models"][1]["params"]["heads"] = 2
    study["models"][1]["strategy"]["params"] = {"head_strengths": [[0.05], [0.1, 0.2]]}
    with pytest.raises(ConfigError, match="has 2 heads and no default_head"):
        parse_config(study)
    study["models"][3]["denoised"]["head"] = 1
    parse_config(study)


def test_an_advfilter_decoder_can_answer_alone() -> None:
    from robustlab.models.denoisers import AdvFilter

    torch.manual_seed(0)
    advfilter, classifier = AdvFilter(1, 28, width=4, fusion_hidden=4), _classifier()
    x = torch.rand(2, 1, 28, 28)
    decoded = advfilter.ynet(x)
    assert torch.equal(Denoised(advfilter, classifier, output="m").denoise(x), decoded.denoised_m)
    assert torch.equal(Denoised(advfilter, classifier, output="sl").denoise(x), decoded.denoised_sl)
    with pytest.raises(InvalidParameterError, match="has no heads"):
        Denoised(advfilter, classifier, head=0)
    with pytest.raises(InvalidParameterError, match="Denoiser has none"):
        Denoised(Denoiser(1, 28, width=4), classifier, output="sl")


@pytest.mark.slow
def test_a_noise_trained_denoiser_sits_beside_the_filters_on_the_same_cells(
    tmp_path: Path,
) -> None:
    noise = {"degradation": "gaussian_noise", "levels": {"low": 0.1, "high": 0.5}}
    study = {
        "name": "denoise-noise",
        "dataset": {"name": "mnist-sample", "test_limit": 300},
        "models": [
            {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [2], "batch_size": 50,
             "learning_rate": 0.001},
            {"name": "nf", "architecture": "huang2021_denoiser", "parent": "cnn-e2",
             "params": {"in_channels": 1, "image_size": 28, "width": 4},
             "strategy": {"name": "denoise", "params": {"perturbation": noise}},
             "epochs": [2], "batch_size": 50, "learning_rate": 0.001},
            {"name": "cnn-nf", "denoised": {"denoiser": "nf-e2", "model": "cnn-e2"}},
        ],
        "defenses": ["none", "median"],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.5]}}],
        "output": str(tmp_path / "run"),
    }  # fmt: skip
    result = run_study(parse_config(study))
    store = ResultsStore(result.run_dir / "results.sqlite")
    noisy = {
        (r.model, r.defense): r
        for r in store.cells(kind="degradation")
        if r.setting == "gaussian_noise"
    }
    # The learned denoiser undoes the noise it was trained on better than nothing does.
    assert noisy[("cnn-nf", "none")].accuracy > noisy[("cnn-e2", "none")].accuracy + 0.2
    # What the classifier sees is measured wherever something cleans the input, and only there.
    assert "output_ssim" not in noisy[("cnn-e2", "none")].metrics
    for key in [("cnn-e2", "median"), ("cnn-nf", "none"), ("cnn-nf", "median")]:
        assert 0 < noisy[key].metrics["output_ssim"] <= 1, key
    assert "Image quality after the defence" in result.report_md.read_text()
