"""Optional inputs given None and ragged predictions: ManualLoop as keras.Model.

Both were found by running Keras' own tests through ManualLoop
(tests/keras_suite). Each test runs Keras' fit/evaluate/predict and
ManualLoop's on twin models from the same seed and compares the results.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from customfit import ManualLoop

X = np.random.default_rng(0).normal(size=(8, 2)).astype("float32")
Y = np.ones((8, 2), "float32")


class _AddIfGiven(keras.layers.Layer):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x, o=None):
        return self.dense(x if o is None else x + o)


def _optional_input_model(**compile_options):
    keras.utils.set_random_seed(3)
    x = keras.Input((2,), name="x")
    o = keras.Input((2,), name="o", optional=True)
    model = keras.Model({"x": x, "o": o}, _AddIfGiven()(x, o))
    model.compile(loss="mse", optimizer="adam", **compile_options)
    return model


def _generator(with_y=True):
    for start in range(0, 8, 4):
        features = {"x": X[start : start + 4], "o": None}
        yield (features, Y[start : start + 4]) if with_y else (features,)


def _run(driver, source):
    if source == "arrays":
        args = ({"x": X, "o": None}, Y)
        predict_args = ({"x": X, "o": None},)
        options = {"batch_size": 4, "shuffle": False}
    else:
        args, predict_args, options = (_generator(),), (_generator(False),), {}
    history = driver.fit(*args, epochs=1, verbose=0, **options)
    if source == "generator":
        args = (_generator(),)
    evaluated = driver.evaluate(*args, verbose=0)
    predicted = driver.predict(*predict_args, verbose=0)
    return history.history, evaluated, predicted


COMPILED = [
    pytest.param({}, id="plain"),
    pytest.param(
        {"steps_per_execution": 2, "jit_compile": True},
        id="spe2-jit",
        marks=pytest.mark.slow,
    ),
]


# Checked on Keras 3.14 and 3.15. Keras' own fit fails on an optional input
# given None on 3.8 and 3.10 (inside its data adapters), and on 3.12 its
# error for a required input given None reads differently.
NONE_INPUTS = pytest.mark.skipif(
    tuple(int(n) for n in keras.version().split(".")[:2]) < (3, 14),
    reason="Keras' own handling of None inputs differs before 3.14",
)


@NONE_INPUTS
@pytest.mark.parametrize("compile_options", COMPILED)
@pytest.mark.parametrize("source", ["arrays", "generator"])
def test_optional_input_given_none_trains_as_keras(source, compile_options):
    keras_model = _optional_input_model(**compile_options)
    loop_model = _optional_input_model(**compile_options)
    expected = _run(keras_model, source)
    got = _run(ManualLoop(loop_model), source)
    assert got[:2] == expected[:2]
    np.testing.assert_array_equal(got[2], expected[2])
    for a, b in zip(
        keras_model.get_weights(), loop_model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b)


@NONE_INPUTS
def test_required_input_given_none_raises_as_keras():
    def model():
        x = keras.Input((3,), name="x")
        built = keras.Model(x, keras.layers.Dense(1)(x))
        built.compile(optimizer="sgd", loss="mse")
        return built

    y = np.ones((4, 1))
    with pytest.raises(ValueError, match="not optional") as keras_error:
        model().fit([None], y, verbose=0)
    with pytest.raises(ValueError, match="not optional") as loop_error:
        ManualLoop(model()).fit([None], y, verbose=0)
    assert str(loop_error.value) == str(keras_error.value)


class Doubler(keras.Model):
    def call(self, x):
        return x * 2


@pytest.mark.parametrize("batch_size", [None, 1])
def test_predict_of_ragged_outputs_is_a_ragged_tensor(batch_size):
    x = tf.ragged.constant([[1.0], [2.0, 3.0], [4.0, 5.0, 6.0]])
    expected = Doubler().predict(x, batch_size=batch_size, verbose=0)
    got = ManualLoop(Doubler()).predict(x, batch_size=batch_size, verbose=0)
    assert type(got) is type(expected) is tf.RaggedTensor
    assert got.to_list() == expected.to_list()


def test_predict_of_batches_of_different_shapes_is_ragged_as_keras():
    # Dense batches whose second dimension differs: Keras concatenates
    # them into a tf.RaggedTensor (potentially_ragged_concat).
    def batches():
        for length in (2, 3):
            yield (np.ones((2, length), "float32"),)

    expected = Doubler().predict(batches(), verbose=0)
    got = ManualLoop(Doubler()).predict(batches(), verbose=0)
    assert type(got) is type(expected) is tf.RaggedTensor
    assert got.to_list() == expected.to_list()


def test_predict_with_steps_per_execution_concatenates_as_keras():
    def model():
        keras.utils.set_random_seed(3)
        inputs = keras.Input((2,))
        built = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        built.compile(steps_per_execution=3)
        return built

    expected = model().predict(X, batch_size=3, verbose=0)
    got = ManualLoop(model()).predict(X, batch_size=3, verbose=0)
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, expected)
