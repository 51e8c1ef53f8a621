"""Malformed calls, drawn by hypothesis: every one fails at the door.

A strategy draws a valid call of `ManualLoop.fit`, `evaluate` or `predict`
(arrays, a dict of arrays or a dataset; with or without validation data),
then corrupts one argument: a wrong type, a value out of range, a wrong
shape, structure or length, or a conflicting combination. Every corrupted
call must raise a customfit error that is a ValueError or a TypeError,
names the argument and gives what was expected, what was received and the
fix, within seconds, before any step: the weights and
`optimizer.iterations` stay as they were. Each corruption names the row of
`tests/test_checks.py::BAD_FIT_CALLS` that makes the same mistake, so
docs/errors.md shows what `keras.Model.fit` does with it.

The draws are derandomized: the same calls on every run (CI included). The
normal suite makes 40 calls; the long profile makes as many as asked:

    CUSTOMFIT_FUZZ_CALLS=1000 PYTHONPATH=src python -m pytest \
        tests/test_checks_fuzz.py -k hypothesis --hypothesis-show-statistics

docs/errors.md shows its last result.
"""

import os
import time
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import customfit
from customfit import ManualLoop
from tests.test_checks import BAD_FIT_CALLS
from tests.test_loop import X
from tests.test_loop import Y
from tests.test_loop import build

CALLS = int(os.environ.get("CUSTOMFIT_FUZZ_CALLS", "40"))
SECONDS = 30  # "within seconds", on a busy two-core machine


class Call(NamedTuple):
    method: str  # "fit", "evaluate", "predict" or "init"
    form: str  # "arrays", "dict" or "dataset"
    kwargs: dict


class Corruption(NamedTuple):
    argument: str  # the argument the error must name
    row: str | None  # the BAD_FIT_CALLS row making the same mistake
    methods: tuple[str, ...]
    forms: tuple[str, ...]
    values: st.SearchStrategy  # what to draw for `corrupt`
    corrupt: object  # (call, drawn value) -> the corrupted kwargs


ALL = ("fit", "evaluate", "predict")
LABELLED = ("fit", "evaluate")
ARRAYS = ("arrays", "dict")
DATASET = ("dataset",)
ANY = ARRAYS + DATASET


def _set(name):
    return lambda call, value: {**call.kwargs, name: value}


def _features(call, x):
    return {"features": x} if call.form == "dict" else x


def _n(call):
    return len(call.kwargs["y"]) if "y" in call.kwargs else 40


CORRUPTIONS = [
    Corruption(
        "batch_size",
        "batch-size-zero",
        ALL,
        ARRAYS,
        st.integers(-64, 0),
        _set("batch_size"),
    ),
    Corruption(
        "batch_size",
        "batch-size-not-an-int",
        ALL,
        ARRAYS,
        st.sampled_from(["8", 2.5, True, [8], 8.0]),
        _set("batch_size"),
    ),
    Corruption(
        "batch_size",
        "batch-size-with-dataset",
        ALL,
        DATASET,
        st.integers(1, 64),
        _set("batch_size"),
    ),
    Corruption(
        "epochs",
        "epochs-not-an-int",
        ("fit",),
        ANY,
        st.sampled_from(["3", 2.5, None, True, [2]]),
        _set("epochs"),
    ),
    Corruption(
        "epochs",
        "epochs-below-initial-epoch",
        ("fit",),
        ANY,
        st.integers(-9, -1),
        _set("epochs"),
    ),
    Corruption(
        "initial_epoch",
        "epochs-below-initial-epoch",
        ("fit",),
        ANY,
        st.integers(2, 9) | st.integers(-9, -1),
        _set("initial_epoch"),
    ),
    Corruption(
        "steps_per_epoch",
        "steps-per-epoch-zero",
        ("fit",),
        ANY,
        st.integers(-9, 0),
        _set("steps_per_epoch"),
    ),
    Corruption(
        "steps_per_epoch",
        "steps-per-epoch-float",
        ("fit",),
        ANY,
        st.sampled_from(["3", 2.5, False]),
        _set("steps_per_epoch"),
    ),
    Corruption(
        "steps",
        "steps-per-epoch-zero",
        ("evaluate", "predict"),
        ANY,
        st.integers(-9, 0),
        _set("steps"),
    ),
    Corruption(
        "steps",
        "steps-per-epoch-float",
        ("evaluate", "predict"),
        ANY,
        st.sampled_from(["3", 2.5]),
        _set("steps"),
    ),
    Corruption(
        "validation_freq",
        "validation-freq-zero",
        ("fit",),
        ANY,
        st.sampled_from([0, -1, [0], [1, -2]]),
        _set("validation_freq"),
    ),
    Corruption(
        "validation_freq",
        "validation-freq-not-an-int",
        ("fit",),
        ANY,
        st.sampled_from([1.5, "1", (1, 2), None, [1.0]]),
        _set("validation_freq"),
    ),
    Corruption(
        "validation_split",
        "validation-split-out-of-range",
        ("fit",),
        ARRAYS,
        st.floats(1.0, 9.0) | st.floats(-9.0, -0.01),
        _set("validation_split"),
    ),
    Corruption(
        "validation_split",
        "validation-split-with-dataset",
        ("fit",),
        DATASET,
        st.floats(0.1, 0.9),
        _set("validation_split"),
    ),
    Corruption(
        "validation_split",
        "validation-split-and-data",
        ("fit",),
        ARRAYS,
        st.floats(0.1, 0.9),
        lambda call, value: {
            **call.kwargs,
            "validation_split": value,
            "validation_data": (_features(call, X), Y),
        },
    ),
    Corruption(
        "shuffle",
        "shuffle-as-a-string",
        ("fit",),
        ANY,
        st.sampled_from(["False", "yes", 2, None, "Batch"]),
        _set("shuffle"),
    ),
    Corruption(
        "verbose",
        "verbose-out-of-range",
        ALL,
        ANY,
        st.sampled_from([3, -1, "loud", None, 1.0]),
        _set("verbose"),
    ),
    Corruption(
        "callbacks",
        "callback-class-not-instance",
        ALL,
        ANY,
        st.sampled_from([[keras.callbacks.EarlyStopping], ["cb"], [1], "cb"]),
        _set("callbacks"),
    ),
    Corruption(
        "sample_weight",
        "sample-and-class-weight",
        ("fit",),
        ARRAYS,
        st.just(None),
        lambda call, _: {
            **call.kwargs,
            "sample_weight": np.ones(_n(call)),
            "class_weight": {0: 1.0, 1: 2.0},
        },
    ),
    Corruption(
        "y",
        "x-y-lengths-differ",
        LABELLED,
        ARRAYS,
        st.integers(1, 15),
        lambda call, cut: {**call.kwargs, "y": call.kwargs["y"][:-cut]},
    ),
    Corruption(
        "y",
        "y-as-a-python-list",
        LABELLED,
        ARRAYS,
        st.just(None),
        lambda call, _: {**call.kwargs, "y": call.kwargs["y"].tolist()},
    ),
    Corruption(
        "y",
        "one-hot-labels-for-sparse-loss",
        LABELLED,
        ARRAYS,
        st.just(None),
        lambda call, _: {**call.kwargs, "y": np.eye(2)[call.kwargs["y"]]},
    ),
    Corruption(
        "y",
        "labels-out-of-range",
        LABELLED,
        ARRAYS,
        st.integers(2, 9) | st.integers(-9, -1),
        lambda call, shift: {
            **call.kwargs,
            "y": call.kwargs["y"] + shift,
        },
    ),
    Corruption(
        "y",
        "y-with-dataset",
        LABELLED,
        DATASET,
        st.just(Y),
        _set("y"),
    ),
    Corruption(
        "sample_weight",
        "y-with-dataset",
        LABELLED,
        DATASET,
        st.just(np.ones(40)),
        _set("sample_weight"),
    ),
    Corruption("x", "x-missing", ALL, ANY, st.just(None), _set("x")),
    Corruption(
        "x",
        "features-of-wrong-width",
        LABELLED,
        ARRAYS,
        st.sampled_from([1, 3, 5, 8]),
        lambda call, width: {
            **call.kwargs,
            "x": _features(call, np.ones((_n(call), width), "float32")),
        },
    ),
    Corruption(
        "x",
        "dict-keys-do-not-match-inputs",
        LABELLED,
        ARRAYS,
        st.sampled_from(["feature", "x", "input_1"]),
        lambda call, key: {
            **call.kwargs,
            "x": {key: np.ones((_n(call), 4), "float32")},
        },
    ),
    Corruption(
        "x",
        "y-as-a-python-list",
        ALL,
        ARRAYS,
        st.just(None),
        lambda call, _: {**call.kwargs, "x": X[: _n(call), 0].tolist()},
    ),
    Corruption(
        "x",
        "unbatched-dataset",
        ALL,
        DATASET,
        st.just(None),
        lambda call, _: {
            **call.kwargs,
            "x": tf.data.Dataset.from_tensor_slices((X, Y)),
        },
    ),
    Corruption(
        "x",
        "empty-dataset",
        ALL,
        DATASET,
        st.just(None),
        lambda call, _: {**call.kwargs, "x": call.kwargs["x"].take(0)},
    ),
    Corruption(
        "x",
        "infinite-without-steps",
        ("fit",),
        DATASET,
        st.just(None),
        lambda call, _: {**call.kwargs, "x": call.kwargs["x"].repeat()},
    ),
    Corruption(
        "x",
        "dataset-with-four-elements",
        LABELLED,
        DATASET,
        st.integers(1, 8),
        lambda call, batch: {
            **call.kwargs,
            "x": tf.data.Dataset.from_tensor_slices((X, Y, Y, Y)).batch(batch),
        },
    ),
    Corruption(
        "x",
        "string-features",
        LABELLED,
        DATASET,
        st.sampled_from(["a b", ""]),
        lambda call, text: {
            **call.kwargs,
            "x": tf.data.Dataset.from_tensor_slices(
                (np.array([text] * 40), Y)
            ).batch(8),
        },
    ),
    Corruption(
        "validation_data",
        "validation-data-without-labels",
        ("fit",),
        ARRAYS,
        st.just(None),
        lambda call, _: {**call.kwargs, "validation_data": _features(call, X)},
    ),
    Corruption(
        "validation_data",
        "validation-structure-differs",
        ("fit",),
        ARRAYS,
        st.just(None),
        lambda call, _: {
            **call.kwargs,
            "validation_data": (
                X if call.form == "dict" else {"features": X},
                Y,
            ),
        },
    ),
    Corruption(
        "validation_data",
        "features-of-wrong-width",
        ("fit",),
        ANY,
        st.sampled_from([1, 3, 5]),
        lambda call, width: {
            **call.kwargs,
            "validation_data": (
                _features(call, np.ones((40, width), "float32")),
                Y,
            ),
        },
    ),
    Corruption(
        "validation_data",
        "dataset-with-four-elements",
        ("fit",),
        ARRAYS,
        st.integers(4, 6),
        lambda call, length: {
            **call.kwargs,
            "validation_data": (_features(call, X), *[Y] * (length - 1)),
        },
    ),
    Corruption(
        "validation_steps",
        "steps-per-epoch-zero",
        ("fit",),
        ANY,
        st.integers(-9, 0),
        lambda call, steps: {
            **call.kwargs,
            "validation_data": (_features(call, X), Y),
            "validation_steps": steps,
        },
    ),
    Corruption(
        "validation_batch_size",
        "batch-size-zero",
        ("fit",),
        ANY,
        st.integers(-9, 0),
        lambda call, size: {
            **call.kwargs,
            "validation_data": (_features(call, X), Y),
            "validation_batch_size": size,
        },
    ),
    Corruption(
        "run_eagerly",
        None,
        ("init",),
        ANY,
        st.sampled_from(["yes", 1, "False"]),
        _set("run_eagerly"),
    ),
    Corruption(
        "backup",
        None,
        ("init",),
        ANY,
        st.sampled_from([3, 2.5, ["runs"], b"runs"]),
        _set("backup"),
    ),
]


@st.composite
def valid_calls(draw, method, form):
    """A call of `method` on `form` data that works."""
    n = draw(st.sampled_from([16, 24, 40]))
    if form == "dataset":
        batch = draw(st.sampled_from([4, 8]))
        kwargs = {
            "x": tf.data.Dataset.from_tensor_slices((X[:n], Y[:n])).batch(batch)
        }
    else:
        x = X[:n]
        kwargs = {"x": {"features": x} if form == "dict" else x}
        if method != "predict":
            kwargs["y"] = Y[:n]
        kwargs["batch_size"] = draw(st.sampled_from([4, 8, None]))
    if method != "init":
        kwargs["verbose"] = 0
    if method == "fit":
        kwargs["epochs"] = 1
        if draw(st.booleans()):
            kwargs["validation_data"] = (
                {"features": X[:8]} if form == "dict" else X[:8],
                Y[:8],
            )
        if form != "dataset" and draw(st.booleans()):
            kwargs["shuffle"] = draw(st.sampled_from([True, False, "batch"]))
    return Call(method, form, kwargs)


@st.composite
def malformed_calls(draw, corruptions=None):
    """(corruption, corrupted call): one argument of a valid call made bad."""
    if corruptions is None:
        corruptions = st.sampled_from(CORRUPTIONS)
    corruption = draw(corruptions)
    method = draw(st.sampled_from(corruption.methods))
    form = draw(st.sampled_from(corruption.forms))
    call = draw(valid_calls(method, form))
    value = draw(corruption.values)
    return corruption, Call(method, form, corruption.corrupt(call, value))


@pytest.fixture(scope="module")
def model():
    """One compiled model for every call: no call may run a step on it."""
    return build()


def _call(model, call):
    if call.method == "init":
        own = ("run_eagerly", "backup")
        return ManualLoop(
            model, **{k: v for k, v in call.kwargs.items() if k in own}
        )
    return getattr(ManualLoop(model), call.method)(**call.kwargs)


def check_fails_at_the_door(model, corruption, call):
    weights = model.get_weights()
    iterations = int(model.optimizer.iterations.numpy())
    start = time.monotonic()
    with pytest.raises(customfit.CustomFitError) as raised:
        _call(model, call)
    seconds = time.monotonic() - start
    error, text = raised.value, str(raised.value)
    assert isinstance(error, (ValueError, TypeError)), type(error)
    assert f"`{corruption.argument}`" in text, text
    for part in ("\nExpected: ", "\nReceived: ", "\nFix: "):
        assert part in text, f"{part!r} missing from:\n{text}"
    assert seconds < SECONDS, f"{seconds:.1f} s to refuse the call"
    assert int(model.optimizer.iterations.numpy()) == iterations
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def _settings(calls):
    return settings(
        max_examples=calls,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


@_settings(CALLS)
@given(drawn=malformed_calls())
def test_hypothesis_malformed_calls_fail_at_the_door(model, drawn):
    corruption, call = drawn
    event(f"{call.method}: {corruption.argument} ({corruption.row})")
    check_fails_at_the_door(model, corruption, call)


@pytest.mark.parametrize(
    "corruption",
    CORRUPTIONS,
    ids=[f"{c.argument}:{c.row}" for c in CORRUPTIONS],
)
def test_each_corruption_fails_at_the_door(model, corruption):
    @_settings(2)
    @given(drawn=malformed_calls(st.just(corruption)))
    def each(drawn):
        check_fails_at_the_door(model, *drawn)

    each()


def test_each_corruption_names_a_row_of_the_errors_table():
    rows = {case[0] for case in BAD_FIT_CALLS}
    for corruption in CORRUPTIONS:
        if corruption.row is not None:  # None: ManualLoop(...) itself
            assert corruption.row in rows, corruption
