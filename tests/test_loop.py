"""ManualLoop: building blocks, eager debugging, what fit prints."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import customfit
from customfit import CustomModel
from customfit import ManualLoop

X = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
Y = (X.sum(axis=1) > 0).astype("int64")


def build(compiled=True, **compile_options):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="features")
    outputs = keras.layers.Dense(2)(inputs)
    model = CustomModel(inputs, outputs)
    if compiled:
        model.compile(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            **compile_options,
        )
    return model


def dataset(x=X, y=Y, batch=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_train_epoch_and_evaluate_epoch_are_building_blocks():
    model = build()
    loop = ManualLoop(model)
    train = customfit.data.batches(dataset())
    test = customfit.data.batches(dataset(batch=20))
    history = []
    for _ in range(3):
        model.reset_metrics()
        logs = loop.train_epoch(train)
        logs.update(
            {f"val_{k}": v for k, v in loop.evaluate_epoch(test).items()}
        )
        history.append(logs)
    assert model.optimizer.iterations.numpy() == 3 * 5
    assert set(history[-1]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history[-1]["val_loss"] < history[0]["val_loss"]

    # The same three epochs through fit give the same numbers.
    reference = build()
    fitted = reference.fit(
        dataset(), epochs=3, validation_data=dataset(batch=20), verbose=0
    ).history
    assert fitted["val_loss"] == [h["val_loss"] for h in history]
    assert fitted["loss"] == [float(h["loss"]) for h in history]


def test_run_eagerly_runs_python_in_the_step_on_every_batch():
    seen = []

    class Traced(CustomModel):
        def train_step(self, data):
            seen.append(tf.executing_eagerly())
            return super().train_step(data)

    inputs = keras.Input((4,))
    model = Traced(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    y = np.zeros((40, 2), "float32")
    ManualLoop(model, run_eagerly=True).fit(X, y, batch_size=8, verbose=0)
    assert seen == [True] * 5
    seen.clear()
    ManualLoop(model).fit(X, y, batch_size=8, verbose=0)
    assert seen == [False]  # traced once, then runs as a graph


def test_recompile_rebuilds_the_compiled_step():
    model = build()
    loop = ManualLoop(model)
    loop.fit(X, Y, batch_size=8, verbose=0)
    first = loop._function("train")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert loop._function("train") is not first
    assert loop._function("train") is loop._function("train")


def test_evaluate_returns_what_keras_returns():
    model = build()
    loop = ManualLoop(model)
    result = loop.evaluate(X, Y, verbose=0)
    assert isinstance(result, list) and len(result) == 2
    assert result == model.evaluate(X, Y, verbose=0)
    as_dict = loop.evaluate(X, Y, verbose=0, return_dict=True)
    assert set(as_dict) == {"loss", "accuracy"}


def test_predict_on_a_model_never_built():
    class Net(CustomModel):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Net()
    predictions = ManualLoop(model).predict(X, batch_size=16, verbose=0)
    assert predictions.shape == (40, 3)
    np.testing.assert_array_equal(predictions, model.predict(X, verbose=0))


def test_fit_prints_what_keras_fit_prints(capsys):
    def run(driver):
        model = build()
        kwargs = dict(x=X, y=Y, batch_size=8, epochs=2, verbose=2)
        if driver == "keras":
            model.fit(**kwargs)
        else:
            ManualLoop(model).fit(**kwargs)
        out = capsys.readouterr().out
        return re.sub(r"\d+(\.\d+)?(ms|s|us)(/step)?", "T", out)

    assert run("manual") == run("keras")


@pytest.fixture
def keras_debug_caps():
    """Sets Keras' debugging caps for one test; always clears them."""
    if not hasattr(keras.config, "set_max_epochs"):
        pytest.skip("Keras < 3.10 has no keras.config.set_max_epochs")
    keras.config.set_max_epochs(2)
    keras.config.set_max_steps_per_epoch(3)
    yield
    keras.config.set_max_epochs(None)
    keras.config.set_max_steps_per_epoch(None)


@pytest.mark.usefixtures("keras_debug_caps")
def test_keras_debug_caps_shorten_runs_as_in_fit():
    runs = {}
    for driver in ("keras", "manual"):
        model = build()
        kwargs = dict(x=X, y=Y, batch_size=8, epochs=5, validation_data=(X, Y))
        warning = {  # Keras' words under fit, customfit's own under ManualLoop
            "keras": "Limiting epochs to 2",
            "manual": "epochs=2: keras.config.set_max_epochs",
        }[driver]
        with pytest.warns(UserWarning, match=warning):
            if driver == "keras":
                history = model.fit(verbose=0, shuffle=False, **kwargs)
            else:
                history = ManualLoop(model).fit(
                    verbose=0, shuffle=False, **kwargs
                )
        # 2 epochs of at most 3 of the 5 batches; as under steps_per_epoch,
        # the second epoch goes on where the first stopped: 3 + 2 steps.
        assert model.optimizer.iterations.numpy() == 3 + 2
        runs[driver] = (history.history, model.get_weights())
    assert runs["manual"][0] == runs["keras"][0]
    for a, b in zip(runs["manual"][1], runs["keras"][1], strict=True):
        np.testing.assert_array_equal(a, b)

    model = build()
    with pytest.warns(UserWarning, match="steps_per_epoch=3: keras.config"):
        evaluated = ManualLoop(model).evaluate(X, Y, batch_size=8, verbose=0)
    assert evaluated == model.evaluate(X, Y, batch_size=8, verbose=0)
    predictions = ManualLoop(model).predict(X, batch_size=8, verbose=0)
    assert predictions.shape == (3 * 8, 2)
