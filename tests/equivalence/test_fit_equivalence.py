"""model.fit and ManualLoop(model).fit give bitwise-equal weights and History.

Each configuration builds a fresh model from the same seed, trains it once
with Keras' fit and once with ManualLoop from the same start, and compares
every weight bitwise (`assert_array_equal`, not allclose) and every History
value exactly. Op determinism is on (tests/conftest.py).
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import customfit
from customfit import CustomModel
from customfit import ManualLoop

SEED = 7
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _arrays(n=96, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=(n,))
    return x, y


X, Y = _arrays()
X_VAL, Y_VAL = _arrays(n=40, seed=1)


def _compile(model, optimizer=None, **options):
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-2),
        loss=LOSS,
        metrics=["accuracy"],
        **options,
    )
    return model


class SubclassedNet(CustomModel):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.dropout = keras.layers.Dropout(0.25, seed=3)
        self.out = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.out(self.dropout(self.hidden(x), training=training))


def subclassed(**options):
    return _compile(SubclassedNet(), **options)


def _functional_layers(inputs):
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    return keras.layers.Dense(3)(hidden)


def functional(**options):
    inputs = keras.Input((6,))
    return _compile(CustomModel(inputs, _functional_layers(inputs)), **options)


def plain_functional(**options):
    inputs = keras.Input((6,))
    return _compile(keras.Model(inputs, _functional_layers(inputs)), **options)


def sequential(**options):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )
    return _compile(model, **options)


def regularized(**options):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(
        16,
        activation="relu",
        kernel_regularizer=keras.regularizers.L2(1e-2),
        activity_regularizer=keras.regularizers.L1(1e-3),
    )(inputs)
    outputs = keras.layers.Dense(3)(hidden)
    return _compile(CustomModel(inputs, outputs), **options)


def multi_input(**options):
    a = keras.Input((4,), name="a")
    b = keras.Input((2,), name="b")
    hidden = keras.layers.Concatenate()(
        [keras.layers.Dense(8)(a), keras.layers.Dense(8)(b)]
    )
    outputs = keras.layers.Dense(3)(keras.layers.ReLU()(hidden))
    return _compile(CustomModel({"a": a, "b": b}, outputs), **options)


class OwnStepNet(CustomModel):
    """Overrides train_step/test_step entirely, with its own trackers."""

    def __init__(self):
        super().__init__()
        self.body = keras.layers.Dense(3)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mae = keras.metrics.MeanAbsoluteError(name="mae")

    def call(self, x):
        return self.body(x)

    @property
    def metrics(self):
        return [self.loss_tracker, self.mae]

    def train_step(self, data):
        x, y = data
        y = tf.one_hot(tf.cast(y, "int32"), 3)
        with tf.GradientTape() as tape:
            y_pred = self(x)
            loss = keras.ops.mean(keras.ops.square(y - y_pred))
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        self.loss_tracker.update_state(loss)
        self.mae.update_state(y, y_pred)
        return {"loss": self.loss_tracker.result(), "mae": self.mae.result()}

    def test_step(self, data):
        x, y = data
        y = tf.one_hot(tf.cast(y, "int32"), 3)
        y_pred = self(x)
        self.loss_tracker.update_state(keras.ops.mean((y - y_pred) ** 2))
        self.mae.update_state(y, y_pred)
        return {"loss": self.loss_tracker.result(), "mae": self.mae.result()}


def own_step(**options):
    model = OwnStepNet()
    model.compile(optimizer=keras.optimizers.SGD(0.1), **options)
    return model


def _dataset(x=X, y=Y, batch=16, shuffle=False):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(64, seed=5, reshuffle_each_iteration=True)
    return ds.batch(batch)


class _Batches(keras.utils.PyDataset):
    """Batches of (x, y) from arrays, the Keras PyDataset way."""

    def __init__(self, x=X, y=Y, batch=16):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, index):
        window = slice(index * self.batch, (index + 1) * self.batch)
        return self.x[window], self.y[window]


def _dict_x(x):
    return {"a": x[:, :4], "b": x[:, 4:]}


@dataclasses.dataclass
class Config:
    name: str
    build: Callable[..., keras.Model]
    fit_kwargs: Callable[[], dict[str, Any]]
    compile_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __str__(self):
        return self.name


def _arrays_kwargs(**extra):
    return lambda: dict(x=X, y=Y, batch_size=16, shuffle=False, **extra)


CONFIGS = [
    Config("subclassed-numpy", subclassed, _arrays_kwargs()),
    Config("functional-numpy", functional, _arrays_kwargs()),
    Config("sequential-numpy", sequential, _arrays_kwargs()),
    Config(
        "numpy-shuffled",
        subclassed,
        lambda: dict(x=X, y=Y, batch_size=16, shuffle=True),
    ),
    Config("tf-data", subclassed, lambda: dict(x=_dataset())),
    Config(
        "py-dataset",
        functional,
        lambda: dict(x=_Batches(), validation_data=_Batches(X_VAL, Y_VAL)),
    ),
    Config(
        "tf-data-shuffled-with-validation",
        functional,
        lambda: dict(
            x=_dataset(shuffle=True),
            validation_data=_dataset(X_VAL, Y_VAL, batch=8),
        ),
    ),
    Config(
        "validation-data-arrays",
        subclassed,
        _arrays_kwargs(validation_data=(X_VAL, Y_VAL)),
    ),
    Config(
        "validation-split",
        sequential,
        _arrays_kwargs(validation_split=0.25, validation_freq=2),
    ),
    Config(
        "sample-weight",
        functional,
        lambda: dict(
            x=X,
            y=Y,
            sample_weight=np.linspace(0.1, 2.0, len(X)),
            batch_size=16,
            shuffle=False,
        ),
    ),
    Config(
        "class-weight",
        subclassed,
        _arrays_kwargs(class_weight={0: 0.5, 1: 2.0, 2: 1.0}),
    ),
    Config(
        "class-weight-tf-data",
        functional,
        lambda: dict(x=_dataset(), class_weight={0: 0.5, 1: 2.0, 2: 1.0}),
    ),
    Config(
        "multi-input-dict",
        multi_input,
        lambda: dict(
            x=_dict_x(X),
            y=Y,
            batch_size=16,
            shuffle=False,
            validation_data=(_dict_x(X_VAL), Y_VAL),
        ),
    ),
    Config("regularizer", regularized, _arrays_kwargs()),
    Config(
        "overridden-train-step",
        own_step,
        lambda: dict(x=_dataset(), validation_data=_dataset(X_VAL, Y_VAL)),
    ),
    Config(
        "ragged-last-batch",
        functional,
        lambda: dict(x=X[:90], y=Y[:90], batch_size=16, shuffle=False),
    ),
    Config(
        "steps-per-execution-4",
        functional,
        _arrays_kwargs(validation_data=(X_VAL, Y_VAL)),
        {"steps_per_execution": 4},
    ),
    Config(
        "infinite-dataset-steps-per-epoch",
        subclassed,
        lambda: dict(x=_dataset().repeat(), steps_per_epoch=4),
    ),
    Config(
        "finite-dataset-steps-per-epoch",
        subclassed,
        lambda: dict(x=_dataset(), steps_per_epoch=4),
    ),
    Config("run-eagerly", subclassed, _arrays_kwargs(), {"run_eagerly": True}),
    Config(
        "gradient-accumulation-3",
        functional,
        _arrays_kwargs(),
        {
            "optimizer": keras.optimizers.Adam(
                1e-2, gradient_accumulation_steps=3
            )
        },
    ),
    Config(
        "clipnorm",
        subclassed,
        _arrays_kwargs(),
        {"optimizer": keras.optimizers.SGD(0.5, clipnorm=0.1)},
    ),
    Config(
        "global-clipnorm-ema",
        functional,
        _arrays_kwargs(),
        {
            "optimizer": keras.optimizers.Adam(
                1e-2, global_clipnorm=0.5, use_ema=True
            )
        },
    ),
]


def train(config: Config, driver: str, epochs: int = 3):
    keras.utils.set_random_seed(SEED)
    options = dict(config.compile_options)
    if "optimizer" in options:  # a fresh optimizer for every run
        optimizer = options["optimizer"]
        options["optimizer"] = optimizer.from_config(optimizer.get_config())
    model = config.build(**options)
    kwargs = dict(epochs=epochs, verbose=0, **config.fit_kwargs())
    keras.utils.set_random_seed(SEED + 1)
    if driver == "keras":
        history = model.fit(**kwargs)
    else:
        history = ManualLoop(model).fit(**kwargs)
    return model, history


def assert_same_weights(a: keras.Model, b: keras.Model):
    weights_a, weights_b = a.get_weights(), b.get_weights()
    assert len(weights_a) == len(weights_b)
    for wa, wb in zip(weights_a, weights_b, strict=True):
        np.testing.assert_array_equal(wa, wb)


CONFIGS_BY_NAME = {config.name: config for config in CONFIGS}
# The configurations of the quick run (`-m "not slow"`): one per input
# kind and loop option; the others run with the full suite.
QUICK = {
    "subclassed-numpy",
    "functional-numpy",
    "tf-data",
    "validation-data-arrays",
    "sample-weight",
    "overridden-train-step",
    "steps-per-execution-4",
    "run-eagerly",
}


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(c, marks=() if c.name in QUICK else pytest.mark.slow)
        for c in CONFIGS
    ],
    ids=str,
)
def test_manual_loop_matches_keras_fit(config):
    keras_model, keras_history = train(config, driver="keras")
    loop_model, loop_history = train(config, driver="manual")
    assert_same_weights(keras_model, loop_model)
    assert loop_history.history == keras_history.history
    assert loop_history.epoch == keras_history.epoch
    assert loop_model.optimizer.iterations.numpy() == (
        keras_model.optimizer.iterations.numpy()
    )
    # The run changed something: the comparison above is not vacuous.
    assert keras_model.optimizer.iterations.numpy() > 0


@pytest.mark.parametrize(
    "config",
    [
        CONFIGS_BY_NAME["functional-numpy"],
        pytest.param(
            CONFIGS_BY_NAME["multi-input-dict"], marks=pytest.mark.slow
        ),
    ],
    ids=str,
)
def test_evaluate_and_predict_match_keras(config):
    model, _ = train(config, driver="keras", epochs=1)
    kwargs = config.fit_kwargs()
    x, y = kwargs["x"], kwargs["y"]
    loop = ManualLoop(model)
    assert loop.evaluate(x, y, batch_size=16, verbose=0) == model.evaluate(
        x, y, batch_size=16, verbose=0
    )
    assert loop.evaluate(
        x, y, batch_size=16, verbose=0, return_dict=True
    ) == model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_array_equal(
        loop.predict(x, batch_size=16, verbose=0),
        model.predict(x, batch_size=16, verbose=0),
    )


def test_evaluate_and_predict_on_datasets_with_steps_per_execution():
    keras.utils.set_random_seed(SEED)
    model = functional(steps_per_execution=3)
    loop = ManualLoop(model)
    ds = _dataset(X_VAL, Y_VAL, batch=8)
    assert loop.evaluate(ds, verbose=0) == model.evaluate(ds, verbose=0)
    np.testing.assert_array_equal(
        loop.predict(ds, verbose=0), model.predict(ds, verbose=0)
    )


REFUSED_BY_BOTH = {
    # Found by the fuzzer: ManualLoop passed on fit's own ValueError.
    "py-dataset-with-sample-weight": lambda: dict(
        x=_Batches(), sample_weight=np.ones(len(X))
    ),
    "class-weight-with-weights-in-a-dataset": lambda: dict(
        x=tf.data.Dataset.from_tensor_slices((X, Y, np.ones(len(X)))).batch(8),
        class_weight={0: 1.0, 1: 2.0, 2: 1.0},
    ),
}


@pytest.mark.parametrize("case", REFUSED_BY_BOTH)
def test_both_drivers_refuse_and_manual_loop_refuses_first(case):
    model = functional()
    with pytest.raises(ValueError):
        model.fit(**REFUSED_BY_BOTH[case](), verbose=0)
    model = functional()
    with pytest.raises(customfit.InputValueError, match="cannot"):
        ManualLoop(model).fit(**REFUSED_BY_BOTH[case](), verbose=0)
    assert model.optimizer.iterations.numpy() == 0


@pytest.mark.slow
def test_custom_model_default_step_equals_plain_keras_model():
    results = {}
    for name, build in (("custom", functional), ("plain", plain_functional)):
        keras.utils.set_random_seed(SEED)
        model = build()
        keras.utils.set_random_seed(SEED + 1)
        history = model.fit(
            X,
            Y,
            batch_size=16,
            epochs=2,
            verbose=0,
            validation_data=(X_VAL, Y_VAL),
        )
        results[name] = (model, history.history)
    assert_same_weights(results["custom"][0], results["plain"][0])
    assert results["custom"][1] == results["plain"][1]


def test_regularization_losses_reach_the_loss():
    # The regularized model's loss exceeds the same model's loss without its
    # regularization terms: compute_loss includes model.losses.
    keras.utils.set_random_seed(SEED)
    model = regularized()
    logs = ManualLoop(model).evaluate(X, Y, verbose=0, return_dict=True)
    y_pred = model.predict(X, verbose=0)
    plain_loss = float(LOSS(Y, y_pred))
    assert logs["loss"] > plain_loss + 1e-4
