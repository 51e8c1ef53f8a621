"""CustomModel: Keras' default step in hooks; each hook can be overridden."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from customfit import CustomModel
from customfit import ManualLoop

X = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
Y = np.random.default_rng(1).normal(size=(32, 1)).astype("float32")


def functional(cls=CustomModel, **compile_options):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = cls(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_functional_and_subclassed_use_do_not_interfere():
    functional()  # Keras alone would rewrite CustomModel's bases here.

    class Net(CustomModel):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    net = Net()
    assert net(X).shape == (32, 1)
    assert CustomModel.__bases__ == (keras.Model,)
    model = functional()
    assert isinstance(model, CustomModel)
    assert type(model).__name__ == "CustomModel"


def test_functional_custom_model_saves_and_loads(tmp_path):
    model = functional()
    model.fit(X, Y, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, CustomModel)
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model(X))


@pytest.mark.parametrize("skip_nonfinite_steps", [False, True])
def test_loaded_model_is_compiled_and_resumes_training_exactly(
    tmp_path, skip_nonfinite_steps
):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = CustomModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(
        optimizer="adam",
        loss="mse",
        metrics=["mae"],
        skip_nonfinite_steps=skip_nonfinite_steps,
    )
    kwargs = dict(batch_size=8, verbose=0, shuffle=False)
    ManualLoop(model).fit(X, Y, **kwargs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns when compile is skipped
        loaded = keras.models.load_model(path)

    assert loaded.compiled
    assert loaded.optimizer.iterations.numpy() == 4
    assert (loaded._skipped_steps is not None) == skip_nonfinite_steps
    expected = ManualLoop(model).fit(X, Y, **kwargs).history
    history = ManualLoop(loaded).fit(X, Y, **kwargs).history
    assert history == expected
    for ours, theirs in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_subclass_with_its_own_compile_keeps_keras_behaviour(tmp_path):
    @keras.saving.register_keras_serializable("customfit_tests")
    class OwnCompile(CustomModel):
        def compile(self, learning_rate=0.1):
            super().compile(
                optimizer=keras.optimizers.SGD(learning_rate), loss="mse"
            )

    inputs = keras.Input((4,))
    model = OwnCompile(inputs, keras.layers.Dense(1)(inputs))
    model.compile()
    path = str(tmp_path / "own.keras")
    model.save(path)
    with pytest.warns(UserWarning, match="not called as part of model loading"):
        loaded = keras.models.load_model(path)
    assert isinstance(loaded, OwnCompile)
    loaded.compile(learning_rate=0.1)  # the caller's job, as in Keras
    assert loaded.compiled


def test_apply_gradients_hook_clips_under_both_drivers():
    class Clipped(CustomModel):
        def apply_gradients(self, gradients, variables):
            gradients = [keras.ops.clip(g, -1e-3, 1e-3) for g in gradients]
            super().apply_gradients(gradients, variables)

    for driver in ("keras", "manual"):
        model = functional(Clipped)
        before = [w.copy() for w in model.get_weights()]
        if driver == "keras":
            model.fit(X, Y, batch_size=32, verbose=0)
        else:
            ManualLoop(model).fit(X, Y, batch_size=32, verbose=0)
        change = [
            np.abs(a - b).max()
            for a, b in zip(model.get_weights(), before, strict=True)
        ]
        # SGD(0.1) on gradients clipped to 1e-3 moves each weight <= 1e-4.
        assert max(change) <= 1e-4 * (1 + 1e-3)
        assert max(change) > 0


def test_compute_loss_hook_replaces_the_loss():
    class AbsoluteLoss(CustomModel):
        def compute_loss(self, x, y, y_pred, sample_weight=None, training=True):
            return keras.ops.mean(keras.ops.abs(y - y_pred))

    model = functional(AbsoluteLoss)
    logs = ManualLoop(model).evaluate(X, Y, verbose=0, return_dict=True)
    expected = np.mean(np.abs(Y - model.predict(X, verbose=0)))
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-6)


def _fit_with(driver, model, **kwargs):
    keras.utils.set_random_seed(1)
    fit = model.fit if driver == "keras" else ManualLoop(model).fit
    return fit(X, Y, batch_size=8, epochs=2, verbose=0, **kwargs).history


@pytest.mark.parametrize("driver", ["keras", "manual"])
def test_compute_loss_without_training_argument_works_as_in_keras(driver):
    # The signature from before Keras 3.3: Keras' trainer checks it and
    # leaves `training` out; the arguments go by position, as there.
    def mae_loss(self, inputs, targets, predictions, weights=None):
        self.seen.append(inputs.shape[1])
        return keras.ops.mean(keras.ops.abs(targets - predictions))

    class OldLoss(CustomModel):
        seen = []
        compute_loss = mae_loss

    class PlainOldLoss(keras.Model):
        seen = []
        compute_loss = mae_loss

    model, plain = functional(OldLoss), functional(PlainOldLoss)
    history = _fit_with(driver, model, validation_data=(X, Y))
    assert history == _fit_with("keras", plain, validation_data=(X, Y))
    for ours, theirs in zip(model.weights, plain.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert OldLoss.seen and set(OldLoss.seen) == {4}  # train and test steps
    loop = ManualLoop(model)
    assert loop.evaluate(X, Y, verbose=0) == plain.evaluate(X, Y, verbose=0)


def test_compile_config_of_the_removed_eager_update_option_still_loads():
    # customfit 0.1 saved `eager_optimizer_update` in the compile config;
    # eager steps now always run Keras' own update, so it is dropped.
    model = functional()
    config = {**model.get_compile_config(), "eager_optimizer_update": True}
    loaded = functional()
    loaded.compile_from_config(config)
    assert loaded.compiled
    assert "eager_optimizer_update" not in loaded.get_compile_config()
    _fit_with("manual", loaded)
    assert loaded.optimizer.iterations.numpy() == 8


def test_compute_gradients_and_forward_hooks_are_called():
    calls = []

    class Spy(CustomModel):
        def forward(self, x, training):
            calls.append(("forward", training))
            return super().forward(x, training)

        def compute_gradients(self, tape, loss, variables):
            calls.append(("gradients", len(variables)))
            return super().compute_gradients(tape, loss, variables)

    model = functional(Spy)
    ManualLoop(model, run_eagerly=True).fit(X, Y, batch_size=32, verbose=0)
    assert calls == [("forward", True), ("gradients", 2)]


def test_model_without_trainable_weights_warns_and_still_reports():
    inputs = keras.Input((4,))
    layer = keras.layers.Dense(1, trainable=False)
    model = CustomModel(inputs, layer(inputs))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="no trainable weights"):
        history = ManualLoop(model).fit(X, Y, batch_size=32, verbose=0)
    assert len(history.history["loss"]) == 1


def test_gan_style_model_with_two_optimizers_trains_both():
    class TwoHeads(CustomModel):
        def __init__(self):
            super().__init__()
            self.a = keras.layers.Dense(1)
            self.b = keras.layers.Dense(1)

        def call(self, x):
            return self.a(x) + self.b(x)

        def compile(self, a_optimizer, b_optimizer):
            super().compile()
            self.a_optimizer = a_optimizer
            self.b_optimizer = b_optimizer
            self.tracker = keras.metrics.Mean(name="gap")

        @property
        def metrics(self):
            return [self.tracker]

        def train_step(self, data):
            x, y = data
            for layer, optimizer in (
                (self.a, self.a_optimizer),
                (self.b, self.b_optimizer),
            ):
                with tf.GradientTape() as tape:
                    loss = keras.ops.mean((self(x) - y) ** 2)
                gradients = tape.gradient(loss, layer.trainable_weights)
                optimizer.apply(gradients, layer.trainable_weights)
            self.tracker.update_state(loss)
            return {"gap": self.tracker.result()}

    model = TwoHeads()
    model.compile(keras.optimizers.SGD(0.05), keras.optimizers.Adam(0.01))
    history = ManualLoop(model).fit(X, Y, batch_size=8, epochs=3, verbose=0)
    assert model.a_optimizer.iterations.numpy() == 12
    assert model.b_optimizer.iterations.numpy() == 12
    gaps = history.history["gap"]
    assert gaps[-1] < gaps[0]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_default_step_equals_plain_keras(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        results = []
        for cls in (CustomModel, keras.Model):
            for driver in ("keras", "manual"):
                model = functional(cls)
                if driver == "keras":
                    history = model.fit(X, Y, batch_size=8, epochs=2, verbose=0)
                else:
                    history = ManualLoop(model).fit(
                        X, Y, batch_size=8, epochs=2, verbose=0
                    )
                results.append((model.get_weights(), history.history))
        if policy == "mixed_float16":
            assert isinstance(
                model.optimizer, keras.optimizers.LossScaleOptimizer
            )
        for weights, history in results[1:]:
            for a, b in zip(results[0][0], weights, strict=True):
                np.testing.assert_array_equal(a, b)
            assert history == results[0][1]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def nan_batches():
    x = np.random.default_rng(2).normal(size=(32, 4)).astype("float32")
    x[12] = np.nan  # in batch 1 (of 4 batches of 8)
    return x, np.ones((32, 1), "float32")


@pytest.mark.parametrize("driver", ["keras", "manual"])
def test_skip_nonfinite_steps_leaves_weights_and_optimizer_untouched(driver):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = CustomModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="adam", loss="mse", skip_nonfinite_steps=True)
    x, y = nan_batches()
    kwargs = dict(batch_size=8, epochs=2, verbose=0, shuffle=False)
    if driver == "keras":
        history = model.fit(x, y, **kwargs)
    else:
        history = ManualLoop(model).fit(x, y, **kwargs)
    assert history.history["skipped_steps"] == [1.0, 1.0]
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert all(np.isfinite(history.history["loss"]))
    assert model.optimizer.iterations.numpy() == 6  # 8 steps, 2 skipped


def test_without_skipping_a_nan_reaches_the_weights_and_terminate_on_nan():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = CustomModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="adam", loss="mse")
    x, y = nan_batches()
    history = ManualLoop(model).fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        shuffle=False,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    assert not all(np.isfinite(w).all() for w in model.get_weights())
    assert model.optimizer.iterations.numpy() == 2  # stopped after batch 1
    assert history.epoch == [0]
