"""Adversarial training examples: generated once per strength, cached, served as a split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import robustlab.train.adversarial_examples as examples_module
from robustlab.attack import create_attack
from robustlab.data.base import Split
from robustlab.errors import InvalidParameterError, ModelError
from robustlab.seeding import derive_seed, make_generator
from robustlab.train.adversarial_examples import AdversarialExamples, ExampleSpec

CPU = torch.device("cpu")


def _split(n: int = 12) -> Split:
    pixels = torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator())
    return Split(pixels, torch.arange(n) % 3)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).eval()


def test_rows_are_the_attack_at_each_strength_within_its_budget(tmp_path: Path) -> None:
    split, net = _split(), _net()
    spec = ExampleSpec("pgd:steps=3", (0.05, 0.2), images=10)
    bank = AdversarialExamples.generate(net, split, spec, folder=tmp_path, device=CPU)
    assert len(bank) == 20 and bank.images == 10 and bank.generated == (0.05, 0.2)
    rows = torch.arange(20)
    clean, _ = next(iter(split.batches(10)))
    assert torch.equal(bank.clean(rows), torch.cat([clean, clean]))
    assert torch.equal(bank.label(rows), split.labels[:10].repeat(2))
    assert torch.equal(bank.strength_index(rows), torch.tensor([0] * 10 + [1] * 10))
    # The second block is the attack at eps 0.2 run by hand with the same generator.
    attack = create_attack("pgd", steps=3, eps=0.2)
    generator = make_generator(derive_seed(0, "adversarial-examples", 0.2), CPU)
    expected = attack.run(net, clean, split.labels[:10], generator).adversarial
    assert torch.allclose(bank.adversarial(rows[10:]), expected, atol=3e-4)  # float16 deltas
    distance = (bank.adversarial(rows) - bank.clean(rows)).abs().flatten(1).amax(dim=1)
    assert bool((distance <= bank.strength(rows) + 1e-7).all())
    assert all(0.0 <= a <= 1.0 for a in bank.accuracy)
    batches = list(bank.batches(7, order=torch.randperm(20, generator=torch.Generator())))
    assert sum(len(r) for _, r in batches) == 20
    x, r = batches[0]
    assert torch.equal(x, bank.adversarial(r))


def test_each_strength_is_generated_once_and_shared_by_subsets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []
    attack = examples_module._attack

    def counting(*args: object, **kwargs: object) -> tuple[torch.Tensor, float]:
        calls.append(float(args[5]))  # type: ignore[arg-type]
        return attack(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(examples_module, "_attack", counting)
    split, net = _split(), _net()
    first = AdversarialExamples.generate(
        net, split, ExampleSpec("pgd:steps=2", (0.1, 0.3)), folder=tmp_path, device=CPU
    )
    again = AdversarialExamples.generate(
        net, split, ExampleSpec("pgd:steps=2", (0.3,)), folder=tmp_path, device=CPU
    )
    assert calls == [0.1, 0.3] and again.generated == ()
    assert torch.equal(again.adversarial(torch.arange(12)), first.adversarial(torch.arange(12, 24)))


def test_keys_separate_classifiers_attacks_and_image_counts() -> None:
    spec = ExampleSpec("pgd:steps=40,rel_step_size=0.1", (0.1,))
    same = ExampleSpec("pgd:rel_step_size=0.1,steps=40", (0.3, 0.5))  # strengths: per file
    assert spec.key("a", "d") == same.key("a", "d")
    assert spec.key("a", "d") != spec.key("b", "d") != spec.key("a", "e")
    assert spec.key("a", "d") != ExampleSpec("pgd:steps=20", (0.1,)).key("a", "d")
    assert spec.key("a", "d") != ExampleSpec(spec.attack, (0.1,), images=5).key("a", "d")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attack": "pgd:eps=0.1"}, "must not set eps"),
        ({"attack": "nope"}, "nope"),
        ({"strengths": ()}, "strengths must be"),
        ({"strengths": (0.0,)}, "strengths must be"),
        ({"images": 0}, "images must be >= 1"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, object], message: str) -> None:
    params: dict[str, object] = {"attack": "pgd", "strengths": (0.1,), **kwargs}
    with pytest.raises(InvalidParameterError, match=message):
        ExampleSpec(**params)  # type: ignore[arg-type]


def test_a_damaged_or_mismatched_file_names_itself(tmp_path: Path) -> None:
    split, net = _split(), _net()
    spec = ExampleSpec("pgd:steps=1", (0.1,), images=4)
    AdversarialExamples.generate(net, split, spec, folder=tmp_path, device=CPU)
    with pytest.raises(ModelError, match=r"hold .* expected"):
        AdversarialExamples.generate(
            net, split, ExampleSpec("pgd:steps=1", (0.1,), images=5), folder=tmp_path, device=CPU
        )
    (file,) = tmp_path.glob("eps-*.safetensors")
    file.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot be read"):
        AdversarialExamples.generate(net, split, spec, folder=tmp_path, device=CPU)
