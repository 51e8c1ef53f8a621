"""Input checks at the door: the argument contract, data, hooks, fuzzing.

Every bad call here must raise a customfit error (a ValueError or TypeError)
naming the argument, what was expected, what was received and the fix,
before any step: the weights and `optimizer.iterations` stay as they were.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import customfit
from customfit import CustomModel
from customfit import ManualLoop
from tests.test_loop import X
from tests.test_loop import Y
from tests.test_loop import build
from tests.test_loop import dataset

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
        "`y` cannot be given when `x` is a dataset",
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
        "`validation_split` cannot be given when `x` is a dataset",
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
    (
        "validation-freq-zero",
        lambda: dict(x=dataset(), validation_data=dataset(), validation_freq=0),
        customfit.InputValueError,
        r"`validation_freq` must be at least 1",
    ),
    (
        "validation-data-without-labels",
        lambda: dict(x=X, y=Y, validation_data=X),
        customfit.InputValueError,
        r"`validation_data` holds no labels[\s\S]*validation_data=\(x_val",
    ),
    (
        "features-of-wrong-width",
        lambda: dict(x=np.ones((40, 5), "float32"), y=Y),
        customfit.InputValueError,
        r"input 'features'[\s\S]*\(None, 4\)[\s\S]*\(None, 5\)",
    ),
    (
        "y-as-a-python-list",
        lambda: dict(x=X, y=Y.tolist()),
        customfit.InputTypeError,
        r"`y` holds Python numbers[\s\S]*np\.asarray\(y\)",
    ),
    (
        "batch-size-zero",
        lambda: dict(x=X, y=Y, batch_size=0),
        customfit.InputValueError,
        "`batch_size` must be at least 1",
    ),
    (
        "validation-split-and-data",
        lambda: dict(x=X, y=Y, validation_split=0.2, validation_data=(X, Y)),
        customfit.InputValueError,
        "`validation_split` and `validation_data` cannot both be given",
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
        customfit.InputValueError, match="several outputs"
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
