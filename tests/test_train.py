from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustlab.data.base import Dataset, Split
from robustlab.train.cache import ModelCache
from robustlab.train.loop import TrainingRecipe, build_model, make_optimizer, train_epochs


@pytest.fixture(scope="module")
def toy() -> Dataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 10
    images = torch.randint(0, 60, (300, 1, 28, 28), generator=g, dtype=torch.uint8)
    # Make the task learnable: class k lights up row band k.
    for k in range(10):
        images[labels == k, :, 2 * k + 4 : 2 * k + 6, 4:24] = 255
    split = Split(images, labels)
    return Dataset("toy", split, split, [str(i) for i in range(10)])


def _recipe(epochs: int, seed: int = 0) -> TrainingRecipe:
    return TrainingRecipe(
        architecture="lin2022_cnn",
        dataset="toy",
        epochs=epochs,
        batch_size=50,
        learning_rate=1e-3,
        seed=seed,
    )


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_training_is_deterministic_and_learns(toy: Dataset) -> None:
    runs = []
    for _ in range(2):
        model = build_model(_recipe(2))
        train_epochs(
            model,
            make_optimizer(_recipe(2), model),
            toy.train,
            _recipe(2),
            start_epoch=0,
            end_epoch=2,
        )
        runs.append(_weights(model))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    other = build_model(_recipe(2, seed=1))
    assert not torch.equal(runs[0][0], _weights(other)[0])


def test_cache_serves_and_continues_bit_for_bit(toy: Dataset, tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "a")
    three = cache.get_or_train(_recipe(3), toy)
    assert three.trained_epochs == 3
    assert three.card.clean_accuracy is not None and three.card.clean_accuracy > 0.9
    again = cache.get_or_train(_recipe(3), toy)
    assert again.trained_epochs == 0 and again.path == three.path

    # 1 epoch, then 3 more from the cached state, equals 4 epochs in one go.
    stepwise = ModelCache(tmp_path / "b")
    assert stepwise.get_or_train(_recipe(1), toy).trained_epochs == 1
    continued = stepwise.get_or_train(_recipe(4), toy)
    assert continued.trained_epochs == 3
    direct = ModelCache(tmp_path / "c").get_or_train(_recipe(4), toy)
    for a, b in zip(_weights(continued.model), _weights(direct.model), strict=True):
        assert torch.equal(a, b)
    # The 3-epoch model of cache "a" continues too: asking it for 4 trains one epoch.
    assert cache.get_or_train(_recipe(4), toy).trained_epochs == 1


def test_interrupted_training_resumes_from_last_epoch(toy: Dataset, tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    calls = {"n": 0}

    def stop_in_epoch_three(n: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2 * 6 + 3:  # 6 batches per epoch: in the middle of the 3rd epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_train(_recipe(4), toy, on_batch=stop_in_epoch_three)
    resumed = cache.get_or_train(_recipe(4), toy)
    assert resumed.trained_epochs == 2
    direct = ModelCache(tmp_path / "direct").get_or_train(_recipe(4), toy)
    for a, b in zip(_weights(resumed.model), _weights(direct.model), strict=True):
        assert torch.equal(a, b)


def test_cache_key_depends_on_data_and_recipe(toy: Dataset, tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    fp = toy.train.fingerprint()
    assert cache.key(_recipe(1), fp) == cache.key(_recipe(5), fp)  # epochs share a lineage
    assert cache.key(_recipe(1), fp) != cache.key(_recipe(1, seed=3), fp)
    assert cache.key(_recipe(1), fp) != cache.key(_recipe(1), "other-data")
