"""Soak: 50 epochs with validation and callbacks: no leak, no retrace."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from customfit import CustomModel
from customfit import ManualLoop


def rss_mb() -> float:
    """This process's resident memory, in MB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class MemoryProbe(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rss = []

    def on_epoch_end(self, epoch, logs=None):
        self.rss.append(rss_mb())


@pytest.mark.slow
def test_fifty_epochs_hold_memory_and_trace_once(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    hidden = keras.layers.Dropout(0.1)(keras.layers.Dense(32)(inputs))
    model = CustomModel(inputs, keras.layers.Dense(4)(hidden))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype("float32")
    y = rng.integers(0, 4, size=(200,))
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(200, seed=1)
    train = train.batch(32).prefetch(2)  # a ragged last batch of 8
    validation = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(32)
    probe = MemoryProbe()
    loop = ManualLoop(model)
    history = loop.fit(
        train,
        epochs=50,
        validation_data=validation,
        verbose=0,
        callbacks=[
            probe,
            keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
            keras.callbacks.ReduceLROnPlateau(patience=3),
            keras.callbacks.ModelCheckpoint(
                str(tmp_path / "best.weights.h5"),
                save_best_only=True,
                save_weights_only=True,
            ),
        ],
    )
    assert len(history.epoch) == 50
    growth = probe.rss[49] - probe.rss[4]
    assert growth < 20, f"RSS grew {growth:.1f} MB from epoch 5 to 50"
    assert loop._function("train").tracing_count == 1
    assert loop._function("test").tracing_count == 1
