"""Eager steps run the optimizer's update as one compiled function.

The model's code stays eager (that is what `run_eagerly=True` is for); the
update is traced once and gives Keras' eager update's bits for the common
optimizers. These tests prove the bits, the tracing, the opt-out and the
fallback for an optimizer that cannot be traced.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from customfit import CustomModel
from customfit import ManualLoop

X = np.random.default_rng(0).normal(size=(96, 6)).astype("float32")
Y = np.random.default_rng(1).integers(0, 3, size=(96,)).astype("int32")


def build(model_class=CustomModel, optimizer=None, **compile_options):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = model_class(inputs, keras.layers.Dense(3)(hidden))
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        run_eagerly=True,
        **compile_options,
    )
    return model


def train(model, epochs=2):
    keras.utils.set_random_seed(5)
    loop = ManualLoop(model, run_eagerly=True)
    return loop.fit(X, Y, batch_size=16, epochs=epochs, verbose=0).history


def all_weights(model):
    return [v.numpy() for v in model.weights + model.optimizer.variables]


def assert_same(a, b):
    for x, y in zip(all_weights(a), all_weights(b), strict=True):
        np.testing.assert_array_equal(x, y)


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "sgd-nesterov": lambda: keras.optimizers.SGD(0.1, 0.9, nesterov=True),
    "nadam": lambda: keras.optimizers.Nadam(),
    "clipnorm-ema": lambda: keras.optimizers.Adam(
        clipnorm=0.1, use_ema=True, ema_overwrite_frequency=3
    ),
    "schedule": lambda: keras.optimizers.Adam(
        keras.optimizers.schedules.ExponentialDecay(1e-2, 4, 0.5)
    ),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_compiled_update_equals_keras_eager_update_bitwise(name):
    # The reference: a plain keras.Model, fit(run_eagerly=True), every op
    # of the update eager.
    plain = build(keras.Model, OPTIMIZERS[name]())
    keras.utils.set_random_seed(5)
    plain_history = plain.fit(
        X, Y, batch_size=16, epochs=2, verbose=0, shuffle=False
    ).history
    custom = build(CustomModel, OPTIMIZERS[name]())
    keras.utils.set_random_seed(5)
    custom_history = ManualLoop(custom, run_eagerly=True).fit(
        X, Y, batch_size=16, epochs=2, verbose=0, shuffle=False
    )
    assert custom._eager_update._function is not None  # it did compile
    assert_same(plain, custom)
    assert custom_history.history == plain_history


class CountingAdam(keras.optimizers.Adam):
    """Adam counting how often the Python body of `update_step` runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.python_updates = 0

    def update_step(self, gradient, variable, learning_rate):
        self.python_updates += 1
        super().update_step(gradient, variable, learning_rate)


def test_update_is_traced_once_and_the_opt_out_runs_it_eagerly():
    compiled = build(optimizer=CountingAdam(1e-2))
    eager = build(optimizer=CountingAdam(1e-2), eager_optimizer_update=True)
    train(compiled)
    train(eager)
    variables = len(compiled.trainable_weights)
    steps = 2 * 6
    # fit and ManualLoop build the optimizer before the first step, so the
    # first step traces; no step after it runs the update's Python.
    assert compiled.optimizer.python_updates == variables
    assert eager.optimizer.python_updates == steps * variables
    assert compiled.optimizer.iterations.numpy() == steps
    assert_same(compiled, eager)


def test_steps_stay_eager_around_the_compiled_update():
    seen = []

    class Probe(CustomModel):
        def apply_gradients(self, gradients, variables):
            seen.append(tf.executing_eagerly())
            super().apply_gradients(gradients, variables)

    train(build(Probe), epochs=1)
    assert seen == [True] * 6


def test_new_trainable_variables_get_a_new_function():
    model = build()
    reference = build(eager_optimizer_update=True)
    for m in (model, reference):
        train(m, epochs=1)
        # Freeze the hidden layer: an eager step reads the trainable
        # weights anew, so the update now has fewer variables.
        m.layers[1].trainable = False
        frozen = m.layers[1].get_weights()
        train(m, epochs=1)
        for before, after in zip(
            frozen, m.layers[1].get_weights(), strict=True
        ):
            np.testing.assert_array_equal(before, after)
    assert_same(model, reference)
    assert model._eager_update._key[1:] == tuple(
        id(v) for v in model.trainable_weights
    )


class NumpyAdam(keras.optimizers.Adam):
    """An optimizer only eager code can run: it reads a tensor's value."""

    def update_step(self, gradient, variable, learning_rate):
        self.last_norm = float(np.linalg.norm(gradient.numpy()))
        super().update_step(gradient, variable, learning_rate)


def test_untraceable_update_runs_eagerly_after_one_warning():
    model = build(optimizer=NumpyAdam(1e-2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train(model)
    messages = [str(w.message) for w in caught]
    compiled_warnings = [m for m in messages if "could not be compiled" in m]
    assert len(compiled_warnings) == 1
    assert "eager_optimizer_update=True" in compiled_warnings[0]
    reference = build(optimizer=NumpyAdam(1e-2), eager_optimizer_update=True)
    assert train(reference) == history
    assert_same(model, reference)


def test_compiled_fit_never_uses_it():
    model = build(optimizer=CountingAdam(1e-2))
    model.run_eagerly = False
    ManualLoop(model).fit(X, Y, batch_size=16, epochs=2, verbose=0)
    assert model._eager_update._function is None


def test_opt_out_survives_saving(tmp_path):
    model = build(eager_optimizer_update=True)
    train(model, epochs=1)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded._eager_update is None
    assert (
        keras.models.load_model(
            _saved(build(), tmp_path / "default.keras")
        )._eager_update
        is not None
    )


def _saved(model, path):
    train(model, epochs=1)
    model.save(path)
    return path


def test_unbuilt_optimizer_builds_eagerly_then_compiles():
    # A hand-written loop calling train_step: the first update creates the
    # optimizer's variables (Keras' eager path), the second traces.
    model = build(optimizer=CountingAdam(1e-2))
    batch = (tf.constant(X[:16]), tf.constant(Y[:16]))
    variables = len(model.trainable_weights)
    counts = []
    for _ in range(4):
        model.train_step(batch)
        counts.append(model.optimizer.python_updates)
    assert counts == [variables, 2 * variables, 2 * variables, 2 * variables]
    assert model.optimizer.iterations.numpy() == 4


def test_loss_scale_overflow_steps_match_the_eager_update():
    # mixed_float16 with a loss scale so large that the first gradients
    # overflow: LossScaleOptimizer skips those steps and halves the scale,
    # a tf.cond inside the compiled update, op by op in the eager one.
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        models = [
            build(
                optimizer=keras.optimizers.LossScaleOptimizer(
                    keras.optimizers.Adam(1e-2), initial_scale=2.0**40
                ),
                eager_optimizer_update=eager,
            )
            for eager in (False, True)
        ]
        histories = [train(model) for model in models]
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    compiled, eager = models
    assert compiled._eager_update._function is not None
    assert compiled.optimizer.dynamic_scale.numpy() < 2.0**40  # it skipped
    assert_same(compiled, eager)
    assert histories[0] == histories[1]
