"""Eager steps run Keras' optimizer update as one compiled function.

The model's code stays eager (that is what `run_eagerly=True` is for), and
so does any optimizer code of the user's; Keras' own update is traced and
gives Keras' eager update's bits for the common optimizers. These tests
prove the bits, when it traces, the opt-out and the fallbacks.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from customfit import CustomModel
from customfit import ManualLoop
from customfit import eager_update

X = np.random.default_rng(0).normal(size=(96, 6)).astype("float32")
Y = np.random.default_rng(1).integers(0, 3, size=(96,)).astype("int32")
STEPS_PER_EPOCH = 6


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


def train(model, epochs=2, callbacks=(), x=X):
    keras.utils.set_random_seed(5)
    loop = ManualLoop(model, run_eagerly=True)
    return loop.fit(
        x, Y, batch_size=16, epochs=epochs, verbose=0, callbacks=callbacks
    ).history


def all_weights(model):
    return [v.numpy() for v in model.weights + model.optimizer.variables]


def assert_same(a, b):
    for x, y in zip(all_weights(a), all_weights(b), strict=True):
        np.testing.assert_array_equal(x, y)


def functions(model):
    """The compiled updates the model's EagerUpdate holds."""
    return list(model._eager_update._functions.values())


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "sgd-nesterov": lambda: keras.optimizers.SGD(0.1, 0.9, nesterov=True),
    "nadam": lambda: keras.optimizers.Nadam(),
    "adamax": lambda: keras.optimizers.Adamax(),
    "lion": lambda: keras.optimizers.Lion(),
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
    assert len(functions(custom)) == 1  # it did compile
    assert_same(plain, custom)
    assert custom_history.history == plain_history


def test_update_is_traced_once_and_the_opt_out_compiles_nothing():
    compiled = build()
    eager = build(eager_optimizer_update=True)
    assert train(compiled) == train(eager)
    (function,) = functions(compiled)
    assert function.experimental_get_tracing_count() == 1
    assert eager._eager_update is None
    assert compiled.optimizer.iterations.numpy() == 2 * STEPS_PER_EPOCH
    assert_same(compiled, eager)


def test_keras_fit_run_eagerly_uses_it_too():
    # Keras runs eager steps inside the default strategy's `strategy.run`.
    model = build()
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    assert len(functions(model)) == 1


def test_steps_and_hooks_stay_eager_around_the_compiled_update():
    seen = []

    class Probe(CustomModel):
        def apply_gradients(self, gradients, variables):
            seen.append(tf.executing_eagerly())
            super().apply_gradients(gradients, variables)

    model = build(Probe)
    train(model, epochs=1)
    assert seen == [True] * STEPS_PER_EPOCH
    assert len(functions(model)) == 1


class CountingAdam(keras.optimizers.Adam):
    """Adam counting how often the Python of its update runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.python_updates = 0
        self.python_applies = 0

    def apply_gradients(self, grads_and_vars):
        self.python_applies += 1
        return super().apply_gradients(grads_and_vars)

    def update_step(self, gradient, variable, learning_rate):
        self.python_updates += 1
        super().update_step(gradient, variable, learning_rate)


def test_an_optimizer_of_yours_runs_eagerly_every_step():
    model = build(optimizer=CountingAdam(1e-2))
    reference = build(eager_optimizer_update=True)
    train(model)
    train(reference)
    steps = 2 * STEPS_PER_EPOCH
    assert model.optimizer.python_applies == steps
    assert model.optimizer.python_updates == steps * 4  # 4 variables
    assert functions(model) == []
    assert_same(model, reference)


def test_a_python_learning_rate_is_read_on_every_step():
    rate = {"value": 1e-2}

    def run(**options):
        rate["value"] = 1e-2
        model = build(
            optimizer=keras.optimizers.Adam(lambda: rate["value"]), **options
        )
        drop = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: rate.update(value=1e-4)
        )
        train(model, callbacks=[drop])
        return model

    model, reference = run(), run(eager_optimizer_update=True)
    assert functions(model) == []
    assert_same(model, reference)


def test_changed_settings_and_variables_trace_anew():
    def run(**options):
        model = build(**options)
        train(model, epochs=1)
        model.optimizer.clipnorm = 0.01  # a Python setting of the update
        train(model, epochs=1)
        # Freeze the hidden layer: an eager step reads the trainable
        # weights anew, so the update now has fewer variables.
        model.layers[1].trainable = False
        frozen = model.layers[1].get_weights()
        train(model, epochs=1)
        for before, after in zip(
            frozen, model.layers[1].get_weights(), strict=True
        ):
            np.testing.assert_array_equal(before, after)
        return model

    model, reference = run(), run(eager_optimizer_update=True)
    assert len(functions(model)) == 3
    assert_same(model, reference)


def test_too_many_changes_go_eager_with_a_warning(monkeypatch):
    monkeypatch.setattr(eager_update, "MAX_FUNCTIONS", 2)

    def run(**options):
        model = build(**options)
        for clipnorm in (1.0, 0.5, 0.25, 0.125):
            model.optimizer.clipnorm = clipnorm
            train(model, epochs=1)
        return model

    with pytest.warns(UserWarning, match="changed 2 times"):
        model = run()
    assert functions(model) == []
    assert_same(model, run(eager_optimizer_update=True))


def _numpy_update_step(self, gradient, variable, learning_rate):
    # Only eager code can run this: it reads a tensor's value.
    self.last_norm = float(np.linalg.norm(gradient.numpy()))
    ADAM_UPDATE_STEP(self, gradient, variable, learning_rate)


ADAM_UPDATE_STEP = keras.optimizers.Adam.update_step


def test_untraceable_update_runs_eagerly_after_one_warning(monkeypatch):
    # A Keras class whose update cannot be traced (patched here: Keras' own
    # optimizers all trace).
    monkeypatch.setattr(
        keras.optimizers.Adam, "update_step", _numpy_update_step
    )
    model = build()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train(model)
    messages = [str(w.message) for w in caught]
    compiled_warnings = [m for m in messages if "could not be compiled" in m]
    assert len(compiled_warnings) == 1
    assert "eager_optimizer_update=True" in compiled_warnings[0]
    assert functions(model) == []
    reference = build(eager_optimizer_update=True)
    assert train(reference) == history
    assert_same(model, reference)


def test_an_error_eager_execution_raises_too_is_raised_as_keras_raises_it():
    model = build()
    model.optimizer.build(model.trainable_weights[:1])  # knows one variable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="[Uu]nknown variable"):
            train(model, epochs=1)
    assert not [w for w in caught if "could not be compiled" in str(w.message)]


def test_unbuilt_optimizer_builds_eagerly_then_compiles():
    # A hand-written loop calling train_step: the first update creates the
    # optimizer's variables (Keras' eager path), the second traces.
    model = build()
    batch = (tf.constant(X[:16]), tf.constant(Y[:16]))
    counts = []
    for _ in range(4):
        model.train_step(batch)
        counts.append(len(functions(model)))
    assert counts == [0, 1, 1, 1]
    assert functions(model)[0].experimental_get_tracing_count() == 1
    assert model.optimizer.iterations.numpy() == 4


def test_skipped_nonfinite_steps_match_the_eager_update():
    x = X.copy()
    x[20] = np.nan  # spoils one batch per epoch

    def run(**options):
        model = build(skip_nonfinite_steps=True, **options)
        return model, train(model, x=x)

    (model, history), (reference, expected) = (
        run(),
        run(eager_optimizer_update=True),
    )
    assert history["skipped_steps"] == [1.0, 1.0]
    assert history == expected
    assert len(functions(model)) == 1
    assert_same(model, reference)


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
    assert len(functions(compiled)) == 1
    assert compiled.optimizer.dynamic_scale.numpy() < 2.0**40  # it skipped
    assert_same(compiled, eager)
    assert histories[0] == histories[1]


def test_opt_out_survives_saving(tmp_path):
    for opt_out in (True, False):
        model = build(eager_optimizer_update=opt_out)
        train(model, epochs=1)
        path = tmp_path / f"model-{opt_out}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        assert (loaded._eager_update is None) is opt_out
