from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from robustlab.errors import ConfigError
from robustlab.study.config import StudyConfig, load_config, load_configs, parse_config
from robustlab.study.plan import make_plan
from robustlab.study.runner import builtin_config, resolve_config_path

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "robustlab" / "configs"

BASE: dict[str, Any] = {
    "name": "t",
    "dataset": {"name": "mnist-sample"},
    "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]}],
    "degradations": [{"name": "salt_pepper", "grid": {"amount": [0.1]}}],
    "defenses": ["none", "median:size=3"],
}


def _with(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"dataset": {"name": "mnits"}},
            "unknown dataset 'mnits'; valid: cifar10, fashion-mnist, folder, gtsrb, mnist, mnist-sample",
        ),
        (
            {"degradations": [{"name": "salt", "grid": {"amount": [0.1]}}]},
            "valid: compose, dead_pixels, gaussian_blur",
        ),
        (
            {"degradations": [{"name": "salt_pepper", "grid": {"sigma": [0.1]}}]},
            "parameter of degradation 'salt_pepper' 'sigma'; valid: amount",
        ),
        (
            {"defenses": ["mean"]},
            "unknown defence 'mean'; valid: box, denoiser, gaussian, jpeg, median, none",
        ),
        ({"defenses": ["median:radius=2"]}, "valid: size"),
        (
            {"models": [{"name": "m", "architecture": "vgg"}]},
            "unknown model 'vgg'; valid: aghdam2016_cifar10",
        ),
        ({"trials": 0}, "trials"),
        ({"colour": "blue"}, "colour"),
        ({"defenses": ["median", "median"]}, "repeated"),
    ],
)
def test_bad_configs_name_the_problem(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_with(**changes), "study.yaml")
    assert expected in str(err.value)
    assert "study.yaml" in str(err.value)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\ndataset:\n  name: mnist\nmodels: [\n  {name: a\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML at line \d+, column \d+"):
        load_config(path)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        resolve_config_path("no/such/study.yaml")


SHIPPED = sorted(str(p.relative_to(CONFIGS)).removesuffix(".yaml") for p in CONFIGS.rglob("*.yaml"))


def test_the_papers_have_their_replication_configs() -> None:
    assert {
        "papers/lin2022",
        "papers/aghdam2016-noise",
        "papers/aghdam2016-min-noise",
        "papers/ghosh2018-compression",
        "papers/huang2021-pgd",
        "papers/aghdam2016-augmentation",
        "papers/ghosh2018-strategies",
        "papers/cavey-ablation",
        "papers/cavey-strategies",
        "papers/cavey-strategies-matched",
        "papers/cavey-strategies-full",
        "papers/madry-pgd-mnist",
    } <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_validates_and_plans(name: str) -> None:
    assert resolve_config_path(f"configs/{name}.yaml").resolve() == builtin_config(name).resolve()
    studies = load_configs(builtin_config(name))
    assert studies and all(isinstance(c, StudyConfig) for c in studies)
    for config in studies:
        plan = make_plan(config, "x")
        ids = {m.id for m in plan.models}
        assert plan.cells or config.attacks or config.minimal_noise
        if config.baseline_model is not None:
            assert config.baseline_model in ids
        if config.reference is None:
            continue
        labels = {d.label for d in plan.defenses}
        settings = {s.label for s in plan.settings}
        for table in config.reference.tables:
            if table.rows_are == "models":
                assert set(table.rows) <= ids, (config.name, table.title)
                assert table.defense in labels, (config.name, table.title)
            else:
                assert table.model in ids, (config.name, table.title)
                assert set(table.rows) <= labels, (config.name, table.title)
            if table.protocol is None:
                assert table.degradation in settings, (config.name, table.title)
            else:
                attack = next(a for a in config.attacks if a.label == table.degradation)
                assert table.protocol in attack.protocols, (config.name, table.title)
        for per_class in config.reference.per_class:
            assert per_class.model in ids, (config.name, per_class.title)
            assert set(per_class.columns) <= settings | {"clean"}, (config.name, per_class.title)


def test_lin2022_reference_matches_plan() -> None:
    config = load_config(builtin_config("papers/lin2022"))
    plan = make_plan(config, "x")
    ids = {m.id for m in plan.models}
    assert ids == {"cnn-e10", "cnn-e20", "cnn-e30"}
    assert config.reference is not None
    labels = {d.label for d in plan.defenses}
    for table in config.reference.tables:
        assert table.model in ids
        assert set(table.rows) <= labels
    # Tables 1-4 of the paper, spot-checked.
    by_title = {t.title: t for t in config.reference.tables}
    assert by_title["Table 2: salt-and-pepper noise, 10 epochs"].rows["median"][3] == 705


def test_plan_pairs_defences_on_identical_noise() -> None:
    config = parse_config(
        _with(trials=3, models=[{"name": "a", "architecture": "lin2022_cnn", "epochs": [1, 2]}])
    )
    plan = make_plan(config, "fp")
    # Noise seeds depend on the setting and trial only: every model and defence sees the same draw.
    seeds = {(g.setting.key, g.trial): set() for g in plan.groups}
    for g in plan.groups:
        seeds[(g.setting.key, g.trial)].add(g.seed)
    assert all(len(s) == 1 for s in seeds.values())
    # Clean is deterministic: one trial; salt_pepper: three.
    assert len(plan.cells) == 2 * 2 * (1 + 3)
    assert len({c.key for c in plan.cells}) == len(plan.cells)
    # The key changes with the data.
    assert make_plan(config, "other").cells[0].key != plan.cells[0].key


def test_multi_document_file_holds_several_studies(tmp_path: Path) -> None:
    import yaml

    from robustlab.study.config import load_configs

    path = tmp_path / "two.yaml"
    second = {**BASE, "name": "t2", "dataset": {"name": "fashion-mnist"}}
    path.write_text(yaml.safe_dump(BASE) + "---\n" + yaml.safe_dump(second))
    configs = load_configs(path)
    assert [c.name for c in configs] == ["t", "t2"]
    with pytest.raises(ConfigError, match="holds 2 studies"):
        load_config(path)
    path.write_text(yaml.safe_dump(BASE) + "---\n" + yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match="distinct names"):
        load_configs(path)


def test_baseline_model_must_exist() -> None:
    with pytest.raises(ConfigError, match=r"baseline_model 'cnn-e9'.*valid: cnn-e1"):
        parse_config(_with(baseline_model="cnn-e9"))
    assert parse_config(_with(baseline_model="cnn-e1")).baseline_model == "cnn-e1"


@pytest.mark.parametrize(
    "suite", ["cifar-c", "imagenet-c", "lin2022", "aghdam2016", "cavey", "ghosh2018"]
)
def test_suites_expand_into_degradations(suite: str) -> None:
    from robustlab.degrade.suites import expand_suite

    config = parse_config(_with(degradations=[{"suite": suite}]))
    entries = expand_suite(suite)
    assert [d.label for d in config.degradations] == [e.label for e in entries]
    for d, e in zip(config.degradations, entries, strict=True):
        assert d.grid == {e.parameter: list(e.values)}
    assert len(make_plan(config, "x").settings) == 1 + sum(len(e.values) for e in entries)


@pytest.mark.parametrize(
    ("degradation", "expected"),
    [
        ({"suite": "cifar-x"}, "unknown suite 'cifar-x'"),
        ({"suite": "cifar-c", "grid": {}}, "takes only 'suite'"),
        ({"name": "jpeg", "grid": {"quality": [0, 50]}}, "quality"),
        ({"name": "jpeg", "grid": {"quality": [101]}}, "quality"),
        ({"name": "gaussian_noise", "grid": {"sigma": [-0.1]}}, "sigma must be >= 0"),
        (
            {"name": "compose", "params": {"steps": ["jpeg"]}, "grid": {"jpg.quality": [5]}},
            "jpg.quality",
        ),
    ],
)
def test_bad_degradation_settings_fail_at_validation(
    degradation: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(_with(degradations=[degradation]))
