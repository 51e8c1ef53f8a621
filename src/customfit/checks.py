"""Checks that need the model and the data together, run before any step.

`data.py` checks the input on its own (empty, unbatched, infinite, ...).
Here the input meets the model: do the features fit the model's inputs, do
the labels fit the loss? These checks read only shapes, dtypes and, for
arrays, the label values; they never run a step or iterate a dataset (that
would change which batches and shuffles the run then sees). Where the model
has not been built yet (a subclassed model before its first call) there is
nothing to compare with, and the checks that need it are skipped.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from customfit.errors import InputTypeError
from customfit.errors import InputValueError
from customfit.errors import message


def check_against_model(
    model: keras.Model,
    element_spec: Any,
    *,
    y: Any = None,
    argument: str = "x",
) -> None:
    """Raises a customfit error if the batches cannot feed `model`.

    Args:
        model: The compiled model about to be trained or evaluated.
        element_spec: One batch's structure of `tf.TensorSpec`: `x`,
            `(x,)`, `(x, y)` or `(x, y, sample_weight)`.
        y: The label arrays, when the user passed arrays (their values are
            checked against a sparse loss's classes).
        argument: The argument name used in error messages.

    Raises:
        InputValueError: For features or labels the model cannot take.
        InputTypeError: For string features a numeric model cannot take.
    """
    _check_element_count(element_spec, argument)
    x_spec, y_spec, _ = keras.utils.unpack_x_y_sample_weight(element_spec)
    inputs = _model_inputs(model)
    if inputs is not None:
        _check_input_keys(inputs, x_spec, argument)
        _check_strings(inputs, x_spec, argument)
    outputs = getattr(model, "outputs", None) if model.built else None
    if outputs and len(outputs) == 1 and y_spec is not None:
        _check_labels(model, outputs[0], y_spec, y)


def check_has_layers(model: keras.Model, method: str) -> None:
    """Raises if `model` is a Sequential with nothing to call."""
    if isinstance(model, keras.Sequential) and not model.layers:
        raise InputValueError(
            message(
                f"ManualLoop.{method}: the Sequential model has no layers, so "
                "it cannot be built or called.",
                expected="a model with at least one layer",
                received=f"keras.Sequential named {model.name!r}, empty",
                fix="add layers first: model.add(keras.layers.Dense(...)), "
                "or pass them to keras.Sequential([...])",
            )
        )


def _check_element_count(element_spec, argument):
    if isinstance(element_spec, tuple) and len(element_spec) > 3:
        raise InputValueError(
            message(
                f"`{argument}` yields {len(element_spec)} elements per batch; "
                "fit reads at most three: (x, y, sample_weight).",
                expected="batches of x, (x,), (x, y) or (x, y, sample_weight)",
                received=f"element_spec={element_spec}",
                fix="group several inputs into a tuple or dict as the first "
                "element: dataset.map(lambda a, b, y: ((a, b), y))",
            )
        )


def check_class_weight(model: keras.Model, class_weight: Any) -> None:
    """Raises if `class_weight` is given for a multi-output model."""
    outputs = getattr(model, "outputs", None) if model.built else None
    if class_weight is not None and outputs and len(outputs) > 1:
        raise InputValueError(
            message(
                "`class_weight` works only for models with a single output.",
                expected="class_weight=None for a model with "
                f"{len(outputs)} outputs",
                received=f"class_weight={class_weight}",
                fix="pass per-sample weights per output instead: "
                "sample_weight={output_name: weights, ...}",
            )
        )


def _model_inputs(model):
    """The model's declared inputs as {name: KerasTensor}, if known."""
    if not model.built:
        return None
    try:
        inputs = model.inputs
    except AttributeError:
        return None
    if not inputs:
        return None
    return {tensor.name: tensor for tensor in inputs}


def _check_input_keys(inputs, x_spec, argument):
    if not isinstance(x_spec, dict):
        return
    if set(x_spec) <= set(inputs):
        missing = sorted(set(inputs) - set(x_spec))
        if not missing:
            return
    raise InputValueError(
        message(
            f"The keys of `{argument}` must name the model's inputs.",
            expected=f"a dict with keys {sorted(inputs)}",
            received=f"a dict with keys {sorted(x_spec)}",
            fix="rename the keys to match the names given to keras.Input(..., "
            "name=...), or rename the model's inputs",
        )
    )


def _check_strings(inputs, x_spec, argument):
    if isinstance(x_spec, dict):
        pairs = [(x_spec[k], k, inputs[k]) for k in x_spec if k in inputs]
    elif len(inputs) == 1 and len(tf.nest.flatten(x_spec)) == 1:
        (name, tensor), spec = next(iter(inputs.items())), x_spec
        pairs = [(spec, name, tensor)]
    else:
        return
    for spec, name, tensor in pairs:
        if getattr(spec, "dtype", None) != tf.string:
            continue
        if keras.backend.standardize_dtype(tensor.dtype) == "string":
            continue
        raise InputTypeError(
            message(
                f"`{argument}` holds strings, and the model's input "
                f"{name!r} takes {tensor.dtype} numbers.",
                expected="numeric features, or a model whose input is "
                'keras.Input(..., dtype="string") followed by a '
                "StringLookup or TextVectorization layer",
                received=f"{spec}",
                fix="turn the strings into numbers before the model "
                "(keras.layers.StringLookup / TextVectorization, in the "
                "model or in dataset.map)",
            )
        )


_SPARSE_LOSSES = ("sparse_categorical_crossentropy",)
_DENSE_LOSSES = ("categorical_crossentropy",)


def _loss_name(model):
    loss = getattr(model, "loss", None)
    function = getattr(loss, "fn", loss)  # a Loss instance wraps a function
    if isinstance(function, str):
        return function
    return getattr(function, "__name__", "")


def _check_labels(model, output, y_spec, y):
    name = _loss_name(model)
    y_shape = getattr(y_spec, "shape", None)
    if y_shape is None or y_shape.rank is None:
        return
    out_rank = len(output.shape)
    classes = output.shape[-1]
    if name in _SPARSE_LOSSES:
        fits = y_shape.rank == out_rank - 1 or (
            y_shape.rank == out_rank and y_shape[-1] == 1
        )
        if not fits:
            raise InputValueError(
                message(
                    f"The labels do not fit the loss {name}: it takes one "
                    "integer class index per sample.",
                    expected=f"labels of shape (batch,) for outputs of shape "
                    f"{tuple(output.shape)}",
                    received=f"labels of shape {tuple(y_shape)}",
                    fix="pass class indices (y.argmax(-1) for one-hot "
                    "labels), or use loss=CategoricalCrossentropy for "
                    "one-hot labels",
                )
            )
        if y is not None and classes:
            _check_label_range(np.asarray(y), classes, name)
    elif name in _DENSE_LOSSES and (
        y_shape.rank != out_rank or y_shape[-1] not in (None, classes)
    ):
        raise InputValueError(
            message(
                f"The labels do not fit the loss {name}: it takes one-hot "
                "(or probability) labels, one column per class.",
                expected=f"labels of shape (batch, {classes})",
                received=f"labels of shape {tuple(y_shape)}",
                fix="one-hot encode them (keras.utils.to_categorical(y, "
                f"{classes})), or use loss=SparseCategoricalCrossentropy "
                "for integer class indices",
            )
        )


def _check_label_range(y, classes, loss_name):
    if y.size == 0 or not np.issubdtype(y.dtype, np.number):
        return
    low, high = y.min(), y.max()
    if low < 0 or high >= classes:
        raise InputValueError(
            message(
                f"Labels out of range for {loss_name}: the model has "
                f"{classes} outputs, so class indices run from 0 to "
                f"{classes - 1}.",
                expected=f"0 <= y < {classes}",
                received=f"labels from {low} to {high}",
                fix=f"check the labels, or give the last layer {int(high) + 1} "
                "units",
            )
        )
