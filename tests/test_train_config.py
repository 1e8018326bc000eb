"""The training settings have one source: `TrainConfig`; the train CLI and the study keys derive from it."""

from __future__ import annotations

import dataclasses

import pytest

from sdeeos import ParameterError
from sdeeos._cli import build_parser
from sdeeos._train_config import TrainConfig, setting_type
from sdeeos.studies._common import train_fields
from sdeeos.theory import batch_noise

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _train_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["train"]


def test_train_cli_has_one_option_per_setting_with_its_type():
    actions = {a.dest: a for a in _train_parser()._actions if a.dest in FIELDS}
    assert set(actions) == set(FIELDS)
    for name, action in actions.items():
        assert action.option_strings == [f"--{name.replace('_', '-')}"]
        if setting_type(name) is not bool:
            assert action.type is setting_type(name) and action.default is None


def test_train_cli_parses_into_the_dataclass():
    args = _train_parser().parse_args(["--lr", "0.25", "--batch-size", "32", "--measure-theory"])
    settings = {k: getattr(args, k) for k in FIELDS if getattr(args, k) is not None}
    cfg = TrainConfig.from_dict(settings).validated()
    assert (cfg.lr, cfg.batch_size, cfg.measure_theory, cfg.dataset) == (0.25, 32, True, "mnist1d")


def test_study_schema_keys_are_the_settings():
    fields = train_fields()
    assert set(fields) == set(FIELDS)
    assert fields["optimizer"].choices == FIELDS["optimizer"].metadata["choices"]
    assert fields["momentum"].high == 1.0 and fields["momentum"].high_open


@pytest.mark.parametrize("settings, message", [
    ({"momentum": 1.0}, r"momentum must be in \[0.0, 1.0\)"),
    ({"optimizer": "lbfgs"}, "optimizer must be one of"),
    ({"n_train": 1}, r"n_train must be an integer in \[2, inf\)"),
    ({"lr": float("nan")}, "lr must be finite"),
    ({"measure_theory": 1}, "measure_theory must be true or false"),
])
def test_validation_names_the_setting(settings, message):
    with pytest.raises(ParameterError, match=message):
        TrainConfig.from_dict(settings).validated()


def test_eos_sgd_batch_noise_factor_comes_from_the_theory():
    torch_side = pytest.importorskip("sdeeos.torch")
    # sigma_u^2 = (n - B)/(B (n - 1)) sigma_1^2 with the population variance sigma_1^2 = (n-1)/n s^2 (ddof=1)
    n, b = 100, 10
    assert torch_side.EoSSGD.batch_noise_factor(b, n) == pytest.approx(1 / b - 1 / n, rel=1e-14)
    assert torch_side.EoSSGD.batch_noise_factor(b, None) == pytest.approx(1 / b, rel=1e-14)
    assert torch_side.without_replacement_factor(n, b) == float(
        batch_noise.centred_coefficient(b, n, "without_replacement"))
