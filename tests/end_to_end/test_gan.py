"""examples/gan.py: a whole custom train_step, the same under both drivers.

The GAN overrides `compile`, `train_step` and `metrics`, and trains two
networks with two optimizers and a SeedGenerator. The equivalence test
trains it from the same seed with `model.fit` and with `ManualLoop`, and
compares every weight and optimizer variable bitwise. Op determinism is on
for the whole suite (tests/conftest.py) and is switched on here again, as the
comparison depends on it.
"""

import math
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tests.conftest import load_script

from customfit import ManualLoop

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "gan.py"
SEED = 11
TINY = ["--limit", "96", "--batch-size", "32", "--epochs", "2"]


gan_example = load_script(SCRIPT)


def _assert_trained(history, epochs, steps_per_epoch):
    assert history.epoch == list(range(epochs))
    assert set(history.history) == {"d_loss", "g_loss"}
    for values in history.history.values():
        assert len(values) == epochs
        assert all(math.isfinite(value) and value > 0 for value in values)
    gan = history.model
    # Both networks were updated on every batch, each by its own optimizer.
    assert int(gan.d_optimizer.iterations) == epochs * steps_per_epoch
    assert int(gan.g_optimizer.iterations) == epochs * steps_per_epoch


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["fit", "manual"])
def test_gan_trains_on_synthetic_images(driver, capsys):
    history = gan_example.main(["--driver", driver, "--synthetic", *TINY])

    _assert_trained(history, epochs=2, steps_per_epoch=3)
    printed = capsys.readouterr().out
    assert re.search(r"^epoch 2: d_loss \d+\.\d{4}, g_loss", printed, re.M)


@pytest.mark.slow
def test_gan_trains_on_real_mnist(tfds_data_dir):
    history = gan_example.main(
        ["--driver", "manual", *TINY, "--data-dir", tfds_data_dir]
    )

    _assert_trained(history, epochs=2, steps_per_epoch=3)


def _train(driver, images):
    """Builds the GAN from SEED and trains it for 2 epochs with `driver`."""
    keras.utils.set_random_seed(SEED)
    gan = gan_example.build_gan(latent_dim=16)
    trainer = gan if driver == "fit" else ManualLoop(gan)
    history = trainer.fit(images, epochs=2, verbose=0)
    return gan, history


def _state(gan):
    """Every variable training changes, in order (layer names differ from
    one model to the next, so they are compared by position)."""
    variables = (
        gan.weights
        + gan.d_optimizer.variables
        + gan.g_optimizer.variables
        + [gan.seed_generator.state]
    )
    return [variable.numpy() for variable in variables]


@pytest.mark.slow
def test_fit_and_manual_loop_train_the_gan_bitwise_equal():
    tf.config.experimental.enable_op_determinism()
    # 80 images in batches of 32: the last batch of each epoch is smaller.
    images = gan_example.load_images(32, limit=80, synthetic=True)
    keras.utils.set_random_seed(SEED)
    initial = _state(gan_example.build_gan(latent_dim=16))

    fit_gan, fit_history = _train("fit", images)
    loop_gan, loop_history = _train("manual", images)

    fit_state, loop_state = _state(fit_gan), _state(loop_gan)
    # 14 weights (6 + 8), the Adams' 2 slots per weight plus their step
    # and rate (14 + 18), and the seed state.
    assert len(fit_state) == len(loop_state) == 14 + 14 + 18 + 1
    for index, (loop_value, fit_value) in enumerate(
        zip(loop_state, fit_state, strict=True)
    ):
        np.testing.assert_array_equal(loop_value, fit_value, err_msg=index)
    assert loop_history.history == fit_history.history
    assert loop_history.epoch == fit_history.epoch == [0, 1]
    # Training moved every weight away from the shared start.
    for before, after in zip(initial[:14], fit_state[:14], strict=True):
        assert not np.array_equal(before, after)
