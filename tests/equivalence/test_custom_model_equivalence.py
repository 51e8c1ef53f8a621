"""CustomModel, under either driver, trains exactly as a plain keras.Model.

The patterns Keras' own trainer and model tests use, each built twice from
the same seed, once on `keras.Model` and once on `CustomModel`:
subclassed, struct (dict in and out) and list inputs, dropout and batch
normalization, `add_loss`, weighted metrics, `steps_per_execution` with an
uneven last chunk, XLA on and off, eager, mixed precision. The reference is
`keras.Model.fit`; `CustomModel.fit` and `ManualLoop(CustomModel).fit` must
give its weights, History, `evaluate` and `predict`, bitwise.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

from customfit import CustomModel
from customfit import ManualLoop
from tests.equivalence.test_fit_equivalence import LOSS
from tests.equivalence.test_fit_equivalence import SEED
from tests.equivalence.test_fit_equivalence import X_VAL
from tests.equivalence.test_fit_equivalence import Y_VAL
from tests.equivalence.test_fit_equivalence import X
from tests.equivalence.test_fit_equivalence import Y
from tests.equivalence.test_fit_equivalence import _dict_x
from tests.equivalence.test_fit_equivalence import assert_same_weights
from tests.equivalence.test_optimizer_equivalence import (
    op_determinism_off_for_xla,
)

layers = keras.layers
VALUES = X[:, :1] * 2.0 - X[:, 1:2]  # a regression target for two heads


def subclassed_net(base):
    class Net(base):
        def __init__(self):
            super().__init__()
            self.hidden = layers.Dense(16, activation="relu")
            self.norm = layers.BatchNormalization()
            self.dropout = layers.Dropout(0.3, seed=3)
            self.out = layers.Dense(3)

        def call(self, x, training=False):
            hidden = self.norm(self.hidden(x), training=training)
            return self.out(self.dropout(hidden, training=training))

    return Net()


def add_loss_net(base):
    class Net(base):
        def __init__(self):
            super().__init__()
            self.hidden = layers.Dense(16, activation="tanh")
            self.out = layers.Dense(3)

        def call(self, x):
            hidden = self.hidden(x)
            self.add_loss(1e-2 * keras.ops.mean(keras.ops.square(hidden)))
            return self.out(hidden)

    return Net()


def struct_net(base):
    a = keras.Input((4,), name="a")
    b = keras.Input((2,), name="b")
    hidden = layers.Dense(8, activation="relu")(layers.Concatenate()([a, b]))
    hidden = layers.Dropout(0.2, seed=4)(hidden)
    outputs = {
        "label": layers.Dense(3, name="label")(hidden),
        "value": layers.Dense(1, name="value")(hidden),
    }
    return base({"a": a, "b": b}, outputs)


def list_net(base):
    a = keras.Input((4,))
    b = keras.Input((2,))
    hidden = layers.Concatenate()([layers.Dense(8, activation="relu")(a), b])
    return base([a, b], layers.Dense(3)(layers.BatchNormalization()(hidden)))


def functional_net(base):
    inputs = keras.Input((6,))
    hidden = layers.Dense(16, activation="relu")(inputs)
    hidden = layers.BatchNormalization()(layers.Dropout(0.25, seed=5)(hidden))
    return base(inputs, layers.Dense(3)(hidden))


STRUCT_COMPILE = dict(
    loss={"label": LOSS, "value": "mse"},
    loss_weights={"label": 1.0, "value": 0.5},
    metrics={"label": ["accuracy"], "value": ["mae"]},
)


def _struct_data(x, y, values):
    return _dict_x(x), {"label": y, "value": values}


@dataclasses.dataclass
class Pattern:
    name: str
    build: Callable[[type], keras.Model]
    data: Callable[[], dict[str, Any]]
    compile_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    policy: str | None = None

    def __str__(self):
        return self.name


def _arrays(**extra):
    return lambda: dict(x=X, y=Y, validation_data=(X_VAL, Y_VAL), **extra)


def _struct():
    x, y = _struct_data(X, Y, VALUES)
    validation = _struct_data(X_VAL, Y_VAL, X_VAL[:, :1])
    return dict(x=x, y=y, validation_data=validation)


def _lists():
    split = [X[:, :4], X[:, 4:]]
    return dict(
        x=split, y=Y, validation_data=([X_VAL[:, :4], X_VAL[:, 4:]], Y_VAL)
    )


SAMPLE_WEIGHT = np.linspace(0.2, 2.0, len(X)).astype("float32")

PATTERNS = [
    Pattern("subclassed-dropout-batchnorm", subclassed_net, _arrays()),
    Pattern("struct-dict-in-dict-out", struct_net, _struct, STRUCT_COMPILE),
    Pattern("list-inputs", list_net, _lists),
    Pattern("add-loss", add_loss_net, _arrays()),
    Pattern(
        "weighted-metrics",
        functional_net,
        _arrays(sample_weight=SAMPLE_WEIGHT),
        # Keras reads a string metric as on probabilities: exact anyway.
        {"weighted_metrics": ["accuracy", "sparse_categorical_crossentropy"]},
    ),
    Pattern(
        "class-weight-weighted-metrics",
        subclassed_net,
        _arrays(class_weight={0: 2.0, 1: 0.5, 2: 1.0}),
        {"weighted_metrics": ["accuracy"]},
    ),
    Pattern(
        # 96 samples in batches of 16: 6 steps, chunks of 4 and 2.
        "steps-per-execution-uneven",
        functional_net,
        _arrays(),
        {"steps_per_execution": 4},
    ),
    Pattern(
        "steps-per-execution-struct",
        struct_net,
        _struct,
        {**STRUCT_COMPILE, "steps_per_execution": 5},
    ),
    Pattern("jit", functional_net, _arrays(), {"jit_compile": True}),
    Pattern("jit-subclassed", subclassed_net, _arrays(), {"jit_compile": True}),
    Pattern("eager", subclassed_net, _arrays(), {"run_eagerly": True}),
    Pattern(
        "eager-struct",
        struct_net,
        _struct,
        {**STRUCT_COMPILE, "run_eagerly": True},
    ),
    Pattern("eager-add-loss", add_loss_net, _arrays(), {"run_eagerly": True}),
    Pattern("mixed-float16", subclassed_net, _arrays(), policy="mixed_float16"),
    Pattern(
        "mixed-bfloat16-struct",
        struct_net,
        _struct,
        STRUCT_COMPILE,
        policy="mixed_bfloat16",
    ),
    Pattern(
        "mixed-float16-eager",
        functional_net,
        _arrays(),
        {"run_eagerly": True},
        policy="mixed_float16",
    ),
]


def build(pattern, base):
    keras.utils.set_random_seed(SEED)
    if pattern.policy:
        keras.mixed_precision.set_dtype_policy(pattern.policy)
    try:
        model = pattern.build(base)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    options = {"loss": LOSS, "metrics": ["accuracy"]}
    options.update(pattern.compile_options)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), **options)
    return model


def run(pattern, base, driver):
    model = build(pattern, base)
    keras.utils.set_random_seed(SEED + 1)
    data = pattern.data()
    fit = model.fit if driver == "keras" else ManualLoop(model).fit
    history = fit(
        **data, batch_size=16, epochs=2, shuffle=False, verbose=0
    ).history
    evaluate = (
        model.evaluate if driver == "keras" else ManualLoop(model).evaluate
    )
    predict = model.predict if driver == "keras" else ManualLoop(model).predict
    x_val, y_val = data["validation_data"]
    scores = evaluate(x_val, y_val, batch_size=16, verbose=0, return_dict=True)
    return model, history, scores, predict(x_val, batch_size=16, verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_custom_model_matches_keras_model_under_both_drivers(pattern):
    mode = "jit" if pattern.compile_options.get("jit_compile") else None
    with op_determinism_off_for_xla(mode):
        reference = run(pattern, keras.Model, "keras")
        ours = [run(pattern, CustomModel, d) for d in ("keras", "manual")]
    model, history, scores, predictions = reference
    # Keras 3.8 counts a LossScaleOptimizer's steps on its inner optimizer.
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    assert optimizer.iterations.numpy() > 0
    assert model.jit_compile is bool(mode)
    for custom, history_, scores_, predictions_ in ours:
        assert isinstance(custom, CustomModel)
        assert_same_weights(custom, model)
        assert history_ == history
        assert scores_ == scores
        for a, b in zip(
            keras.tree.flatten(predictions_),
            keras.tree.flatten(predictions),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
