"""plot_history: a History's curves to a PNG; matplotlib only when drawing."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import customfit
from customfit import ManualLoop
from customfit.plotting import plot_history

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HISTORY = {
    "accuracy": [0.5, 0.7, 0.8, 0.85],
    "loss": [1.0, 0.6, 0.4, 0.3],
    "val_accuracy": [0.55, 0.6],
    "val_loss": [0.9, 0.7],
}


def test_a_real_history_becomes_a_png_with_one_panel_per_metric(tmp_path):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = ManualLoop(model).fit(
        x, y, batch_size=8, epochs=3, validation_split=0.25, verbose=0
    )
    path = tmp_path / "curves.png"
    figure = plot_history(history, path, title="run")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["loss", "accuracy"]  # the loss first
    for ax in figure.axes:
        train, validation = ax.get_lines()
        assert list(train.get_xdata()) == [1, 2, 3]
        assert list(validation.get_xdata()) == [1, 2, 3]
    np.testing.assert_allclose(
        figure.axes[0].get_lines()[1].get_ydata(), history.history["val_loss"]
    )


def test_validation_values_go_to_the_epochs_that_validated():
    figure = plot_history(HISTORY, metrics=["val_loss"], validation_freq=2)
    (ax,) = figure.axes
    train, validation = ax.get_lines()
    assert list(train.get_xdata()) == [1, 2, 3, 4]
    assert list(validation.get_xdata()) == [2, 4]
    figure = plot_history(HISTORY, metrics=["loss"], validation_freq=[1, 3])
    assert list(figure.axes[0].get_lines()[1].get_xdata()) == [1, 3]


def test_a_resumed_history_keeps_its_epoch_numbers():
    history = keras.callbacks.History()
    history.history = {"loss": [0.5, 0.4]}
    history.epoch = [3, 4]  # fit(..., initial_epoch=3, epochs=5)
    figure = plot_history(history)
    assert list(figure.axes[0].get_lines()[0].get_xdata()) == [4, 5]


@pytest.mark.parametrize(
    "history, kwargs, error, pattern",
    [
        ([1.0, 2.0], {}, customfit.InputTypeError, "History or its dict"),
        ({"loss": []}, {}, customfit.InputValueError, "no epoch to plot"),
        (HISTORY, {"metrics": ["acc"]}, customfit.InputValueError, "'acc'"),
        (HISTORY, {}, customfit.InputValueError, "validation_freq"),
    ],
    ids=["not-a-history", "empty", "unknown-metric", "wrong-validation-freq"],
)
def test_unusable_arguments_fail_with_the_fix(history, kwargs, error, pattern):
    with pytest.raises(error, match=pattern) as raised:
        plot_history(history, **kwargs)
    assert "Fix: " in str(raised.value)


@pytest.mark.slow
def test_without_matplotlib_the_error_names_the_extra():
    # A fresh interpreter in which matplotlib cannot be imported: importing
    # customfit.plotting works, drawing says how to install the extra.
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from customfit.plotting import plot_history\n"
        "from customfit.errors import MissingDependencyError\n"
        "try:\n"
        "    plot_history({'loss': [1.0]})\n"
        "except MissingDependencyError as error:\n"
        "    assert isinstance(error, ImportError)\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'pip install "customfit[plotting]"' in done.stdout
