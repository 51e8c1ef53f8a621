"""ManualLoop: input checks at the door, building blocks, eager debugging."""

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


# (id, fit kwargs, error type, pattern the message must contain)
BAD_FIT_CALLS = [
    (
        "empty-dataset",
        lambda: dict(x=dataset().take(0)),
        customfit.InputValueError,
        "empty dataset",
    ),
    (
        "unbatched-dataset",
        lambda: dict(x=tf.data.Dataset.from_tensor_slices((X, Y))),
        customfit.InputValueError,
        r"looks unbatched[\s\S]*Fix: call \.batch",
    ),
    (
        "infinite-without-steps",
        lambda: dict(x=dataset().repeat()),
        customfit.InputValueError,
        r"`steps_per_epoch` is required[\s\S]*remove \.repeat\(\)",
    ),
    (
        "x-y-lengths-differ",
        lambda: dict(x=X, y=Y[:-3]),
        customfit.InputValueError,
        r"same number of samples[\s\S]*x: \[40\], y: \[37\]",
    ),
    (
        "y-with-dataset",
        lambda: dict(x=dataset(), y=Y),
        customfit.InputValueError,
        "`y` cannot be given when `x` is a tf.data.Dataset",
    ),
    (
        "validation-structure-differs",
        lambda: dict(
            x={"features": X},
            y=Y,
            validation_data=(X, Y),
        ),
        customfit.InputValueError,
        "`validation_data` must have the same structure",
    ),
    (
        "batch-size-with-dataset",
        lambda: dict(x=dataset(), batch_size=8),
        customfit.InputValueError,
        "`batch_size` cannot be given",
    ),
    (
        "steps-per-epoch-zero",
        lambda: dict(x=dataset(), steps_per_epoch=0),
        customfit.InputValueError,
        "`steps_per_epoch` must be at least 1",
    ),
    (
        "epochs-below-initial-epoch",
        lambda: dict(x=dataset(), epochs=2, initial_epoch=3),
        customfit.InputValueError,
        r"initial_epoch=5, epochs=8",
    ),
    (
        "validation-split-with-dataset",
        lambda: dict(x=dataset(), validation_split=0.2),
        customfit.InputValueError,
        "`validation_split` works only with array input",
    ),
    (
        "sample-and-class-weight",
        lambda: dict(
            x=X, y=Y, sample_weight=np.ones(40), class_weight={0: 1, 1: 2}
        ),
        customfit.InputValueError,
        "cannot both be given",
    ),
    (
        "one-hot-labels-for-sparse-loss",
        lambda: dict(x=X, y=np.eye(2)[Y]),
        customfit.InputValueError,
        r"one integer class index per sample[\s\S]*shape \(None, 2\)",
    ),
    (
        "labels-out-of-range",
        lambda: dict(x=X, y=Y * 5),
        customfit.InputValueError,
        r"Labels out of range[\s\S]*labels from 0 to 5",
    ),
    (
        "string-features",
        lambda: dict(
            x=tf.data.Dataset.from_tensor_slices(
                (np.array(["a b"] * 40), Y)
            ).batch(8)
        ),
        customfit.InputTypeError,
        r"holds strings[\s\S]*StringLookup",
    ),
    (
        "dataset-with-four-elements",
        lambda: dict(
            x=tf.data.Dataset.from_tensor_slices((X, Y, Y, Y)).batch(8)
        ),
        customfit.InputValueError,
        "yields 4 elements per batch",
    ),
    (
        "dict-keys-do-not-match-inputs",
        lambda: dict(x={"feature": X}, y=Y),
        customfit.InputValueError,
        r"a dict with keys \['features'\][\s\S]*\['feature'\]",
    ),
    (
        "steps-per-epoch-float",
        lambda: dict(x=dataset().repeat(), steps_per_epoch=2.5),
        customfit.InputTypeError,
        "`steps_per_epoch` must be a whole number",
    ),
    (
        "epochs-not-an-int",
        lambda: dict(x=dataset(), epochs="3"),
        customfit.InputTypeError,
        "`epochs` must be a whole number",
    ),
    (
        "x-missing",
        lambda: dict(x=None),
        customfit.InputValueError,
        "`x` is missing",
    ),
    (
        "callback-class-not-instance",
        lambda: dict(x=dataset(), callbacks=[keras.callbacks.EarlyStopping]),
        customfit.InputTypeError,
        r"EarlyStopping\(\) rather than EarlyStopping",
    ),
]


@pytest.mark.parametrize(
    "make_kwargs, error, pattern",
    [case[1:] for case in BAD_FIT_CALLS],
    ids=[case[0] for case in BAD_FIT_CALLS],
)
def test_bad_fit_call_fails_at_the_door(make_kwargs, error, pattern):
    model = build()
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(error, match=pattern) as raised:
        ManualLoop(model).fit(verbose=0, **make_kwargs())
    text = str(raised.value)
    for part in ("Expected: ", "Received: ", "Fix: "):
        assert part in text, f"message lacks {part!r}:\n{text}"
    assert model.optimizer.iterations.numpy() == 0
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_class_weight_for_a_multi_output_model_fails_at_the_door():
    inputs = keras.Input((4,))
    model = CustomModel(
        inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)]
    )
    model.compile(optimizer="sgd", loss=["mse", "mse"])
    with pytest.raises(
        customfit.InputValueError, match="single output"
    ) as raised:
        ManualLoop(model).fit(
            X, (np.zeros((40, 2)), np.zeros((40, 2))), class_weight={0: 2.0}
        )
    assert "Fix: " in str(raised.value)
    assert model.optimizer.iterations.numpy() == 0


def test_tf_keras_model_is_refused_with_the_fix():
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(4,))])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(customfit.InputTypeError, match="not tf_keras"):
        ManualLoop(model)


def test_predict_on_an_empty_sequential_fails_at_the_door():
    with pytest.raises(customfit.InputValueError, match="has no layers"):
        ManualLoop(keras.Sequential()).predict(X, verbose=0)


def test_uncompiled_model_fails_with_the_fix():
    model = build(compiled=False)
    with pytest.raises(
        customfit.NotCompiledError, match=r"call model\.compile"
    ):
        ManualLoop(model).fit(X, Y, verbose=0)
    with pytest.raises(customfit.NotCompiledError, match="evaluate"):
        ManualLoop(model).evaluate(X, Y, verbose=0)


def test_model_that_is_not_a_keras_model_is_refused():
    with pytest.raises(
        customfit.InputTypeError, match=r"ManualLoop\(<function build>\(\)\)"
    ):
        ManualLoop(build)
    with pytest.raises(customfit.InputTypeError, match="keras.Model instance"):
        ManualLoop("model")


def test_errors_subclass_the_builtin_types():
    assert issubclass(customfit.InputValueError, ValueError)
    assert issubclass(customfit.InputTypeError, TypeError)
    assert issubclass(customfit.NotCompiledError, ValueError)
    assert issubclass(customfit.InputValueError, customfit.CustomFitError)


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
        with pytest.warns(UserWarning, match="Limiting epochs to 2"):
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
    with pytest.warns(UserWarning, match="Limiting steps_per_epoch to 3"):
        evaluated = ManualLoop(model).evaluate(X, Y, batch_size=8, verbose=0)
    assert evaluated == model.evaluate(X, Y, batch_size=8, verbose=0)
    predictions = ManualLoop(model).predict(X, batch_size=8, verbose=0)
    assert predictions.shape == (3 * 8, 2)
