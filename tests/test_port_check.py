"""The divergence locator on the seed CNN: the correct ports pass, six broken ports are each found.

Every broken port differs from torch at step 1, so two steps suffice; the correct ports run three.
The factories live in :mod:`examples.seed_cnn_ports` (also the CLI's documented example).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from examples import seed_cnn_ports as ports
from functional_optreg import port_check
from functional_optreg.port_report import Check, update_evidence

BROKEN = {
    # factory: (stage, name starts with, the first likely cause starts with)
    "maxpool_padding_same": ("activation", "conv2", "pooling"),
    "batchnorm_running_var_unconverted": ("model state", "bn1.running_var", "BatchNorm running variance"),
    "kernel_not_transposed": ("activation", "conv1", "a kernel in the wrong axis order"),
    "loss_sum_not_mean": ("loss", "", "reduction: sum vs mean"),
    "clip_after_weight_decay": ("update", "conv1.weight", "clipping order"),
    "eps_inside_sqrt": ("update", "conv1.weight", "eps placement"),
    "flatten_channels_last": ("activation", "fc1", "layout"),
}


@pytest.mark.parametrize("factory", ["correct", "correct_clipping", "correct_variant"])
def test_correct_ports_pass(factory):
    port = getattr(ports, factory)()
    report = port_check.compare_training(port, steps=3)
    assert report.passed, str(report)
    assert not any(module._forward_hooks for module in port.torch_module.modules()), "hooks left behind"
    stages = {check.stage for check in report.checks}
    assert {"initial parameters", "activation", "output", "loss", "gradient", "update"} <= stages
    assert "optimizer state" in stages  # Adam's step/exp_avg/exp_avg_sq, SGD's momentum_buffer
    if factory == "correct_variant":
        assert {"initial model state", "model state"} <= stages


@pytest.mark.parametrize("factory", BROKEN)
def test_broken_port_is_located(factory):
    stage, name, cause = BROKEN[factory]
    report = port_check.compare_training(getattr(ports, factory)(), steps=2)
    assert not report.passed
    first = report.first
    assert (first.step, first.stage) == (1, stage), str(report)
    assert first.name.startswith(name), str(report)
    assert first.ratio > 100, "a port mistake is far outside the tolerance, not at its edge"
    assert report.causes[0].startswith(cause), report.causes
    # everything the step computed before the first divergence matched
    before = [check for check in report.checks if check.step <= 1][: report.checks.index(first)]
    assert all(check.passed for check in before)
    if factory == "eps_inside_sqrt":
        assert any("epsilon" in item for item in report.evidence), report.evidence
        # optax's scale_by_adam names its moments mu/nu: said, not silently skipped
        assert report.notes == [
            "optimizer state not compared: no field of the transform's state is named like torch's state keys "
            "(exp_avg, exp_avg_sq, step); the update stage still checks the optimizer"
        ]
    else:
        assert report.notes == []


def test_free_running_with_a_scheduler_checks_parameters():
    report = port_check.compare_training(ports.correct_schedule(), steps=4, resync=False)
    assert report.passed, str(report)
    assert any(check.stage == "parameters" for check in report.checks)


def test_schedule_off_by_one_is_a_common_factor_in_the_update():
    report = port_check.compare_training(ports.schedule_off_by_one(), steps=3)
    assert (report.first.step, report.first.stage) == (2, "update"), str(report)
    assert report.causes[0].startswith("learning-rate schedule timing"), report.causes
    assert any("same factor 0.5" in item for item in report.evidence), report.evidence


def test_float32_correct_port_passes():
    report = port_check.compare_training(ports.correct(), steps=2, dtype="float32")
    assert report.passed, str(report)


def test_wrong_initial_weights_are_the_first_stage():
    port = ports.correct()
    params = {key: dict(value) for key, value in port.variables["params"].items()}
    params["fc2"]["bias"] = params["fc2"]["bias"] + 1e-3
    port.variables = {"params": params}
    report = port_check.compare_training(port, steps=1)
    assert (report.first.step, report.first.stage, report.first.name) == (
        0,
        "initial parameters",
        "fc2.bias (fc2/bias)",
    )


def test_mapping_validation_names_the_parameter():
    port = ports.correct()
    port.mapping = {key: value for key, value in port.mapping.items() if key != "fc1.bias"}
    with pytest.raises(ValueError, match="the mapping has no entry for torch parameter 'fc1.bias'"):
        port_check.compare_training(port, steps=1)
    port = ports.correct()
    port.mapping = dict(port.mapping, **{"fc1.weight": ports.fo.ParamPath(("fc1", "kernel"))})
    with pytest.raises(
        ValueError, match=r"torch parameter 'fc1.weight' in the mapping's layout has shape \(128, 3136\)"
    ):
        port_check.compare_training(port, steps=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"dtype": "float16"}, "dtype must be 'float64' or 'float32'"), ({"steps": 11}, r"steps \(=11\) must be between")],
)
def test_argument_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        port_check.compare_training(ports.correct(), **kwargs)


def test_update_evidence_signatures():
    rng = np.random.default_rng(0)
    theirs = rng.normal(size=50)
    assert "same factor 0.5" in update_evidence(0.5 * theirs, theirs, None)[0]
    grad = rng.uniform(1e-9, 1e-6, size=50)
    eps = 1e-8
    assert "epsilon" in update_evidence(grad / np.sqrt(grad**2 + eps), grad / (np.abs(grad) + eps), grad)[0]
    assert update_evidence(theirs + rng.normal(size=50), theirs, rng.normal(size=50)) == []


def test_check_ratio_and_text():
    check = Check(3, "update", "w", 2e-12, 1e-12, "detail")
    assert not check.passed and check.ratio == 2.0  # 2e-12 / 1e-12 rounds to 2 exactly (IEEE division)
    assert str(check) == "step 3: update of w: error 2.000e-12 > tolerance 1.0e-12 (2x); detail"


def test_cli_writes_the_report_and_fails_on_a_broken_port(tmp_path, capsys):
    from parity import __main__ as cli

    out = tmp_path / "loss"
    assert cli.main(["port", "examples.seed_cnn_ports:loss_sum_not_mean", "--out", str(out), "--steps", "2"]) == 1
    assert "FAIL - first divergence at step 1: loss" in capsys.readouterr().out
    text = (out / "report.txt").read_text()
    assert "reduction: sum vs mean" in text and "initial parameters" in text
    assert sorted(os.listdir(out)) == ["checks.csv", "report.txt", "stages.png"]
    assert (out / "stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "checks.csv").read_text().splitlines()
    assert rows[0] == "step,stage,name,error,tolerance,passed"
    assert sum(row.startswith("2,loss,") for row in rows) == 1  # the run went on after the divergence


def test_cli_loads_a_factory_from_a_file(tmp_path, capsys):
    from parity import __main__ as cli

    script = tmp_path / "my_port.py"
    script.write_text("from examples.seed_cnn_ports import correct_clipping as build\n")
    assert cli.main(["port", f"{script}:build", "--out", str(tmp_path / "ok"), "--steps", "1"]) == 0
    assert "PASS" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("examples.seed_cnn_ports", "expected MODULE:FACTORY"),
        ("examples.seed_cnn_ports:nothing", "has no callable 'nothing'"),
        ("missing_file.py:build", "no such Python file"),
        ("examples.seed_cnn_ports:_batches", "returned tuple, not a Port"),
    ],
)
def test_cli_rejects_bad_targets(target, message, capsys):
    from parity import __main__ as cli

    assert cli.main(["port", target]) == 2
    assert message in capsys.readouterr().err
