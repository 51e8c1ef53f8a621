"""examples/mnist_custom_loop.py trains real MNIST under every driver.

The fast tests train on 256 examples for one epoch (four steps), in-process
and once through the command line. The slow test trains one full epoch with
`model.fit` and with `ManualLoop` and checks the tutorial's accuracy. All
need the prepared MNIST of `../shared/data/tfds` (the `tfds_data_dir`
fixture of tests/conftest.py skips where it is absent).
"""

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import load_script

from customfit import ManualLoop

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "mnist_custom_loop.py"
LIMIT = 256
TINY = ["--limit", str(LIMIT), "--epochs", "1"]


mnist = load_script(SCRIPT)


@functools.cache
def _fit_accuracy(data_dir):
    """Test accuracy of the tiny run through model.fit (computed once)."""
    return mnist.main(["--driver", "fit", *TINY, "--data-dir", data_dir])


@pytest.mark.parametrize("driver", ["fit", "manual", "eager"])
def test_tiny_run_prints_accuracies_and_matches_fit(
    driver, tfds_data_dir, capsys
):
    accuracy = mnist.main(
        ["--driver", driver, *TINY, "--data-dir", tfds_data_dir]
    )

    printed = capsys.readouterr().out
    assert re.search(r"^epoch 1: train accuracy 0\.\d{4}$", printed, re.M)
    assert f"test accuracy ({driver}): {accuracy:.4f}" in printed
    # Chance is 0.1; four Adam steps on 256 images reach about 0.56.
    assert 0.25 < accuracy <= 1.0
    # Same seed, same step: every driver scores what fit scores (allowing
    # one test image of float noise between eager and compiled steps).
    assert accuracy == pytest.approx(
        _fit_accuracy(tfds_data_dir), abs=1.5 / LIMIT
    )


@pytest.mark.slow  # a subprocess importing TensorFlow
def test_command_line_runs_the_manual_loop(tfds_data_dir):
    # The command of the module docstring, with TFDS_DATA_DIR in the
    # environment rather than --data-dir.
    env = dict(os.environ, TFDS_DATA_DIR=tfds_data_dir)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--driver", "manual", *TINY],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"^test accuracy \(manual\): (\S+)$", result.stdout, re.M)
    assert match, result.stdout[-3000:]
    assert float(match.group(1)) == pytest.approx(
        _fit_accuracy(tfds_data_dir), abs=1.5 / LIMIT
    )


def test_each_driver_name_picks_its_trainer():
    model = mnist.build_model()

    assert mnist.driver(model, "fit") is model
    manual = mnist.driver(model, "manual")
    eager = mnist.driver(model, "eager")
    assert isinstance(manual, ManualLoop) and manual.run_eagerly is False
    assert isinstance(eager, ManualLoop) and eager.run_eagerly is True
    assert manual.model is model and eager.model is model


def test_unknown_driver_is_refused_by_the_command_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        mnist.main(["--driver", "keras"])

    assert exit_info.value.code == 2
    assert "invalid choice: 'keras'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["fit", "manual"])
def test_one_epoch_on_full_mnist_reaches_97_percent(driver, tfds_data_dir):
    accuracy = mnist.main(
        ["--driver", driver, "--epochs", "1", "--data-dir", tfds_data_dir]
    )

    assert accuracy >= 0.97
