"""Every input check customfit runs at the door, before any step.

The arguments of `ManualLoop(...)`, `fit`, `evaluate` and `predict` on their
own (types, ranges, conflicts), the data on its own (empty, unbatched,
infinite, ...), and the data against the model: do the features fit the
model's inputs, do the labels fit the loss? These checks read only shapes,
dtypes and, for arrays, the label values; they never run a step or iterate a
dataset (that would change which batches and shuffles the run then sees).
Where the model has not been built yet (a subclassed model before its first
call) there is nothing to compare with, and the checks that need it are
skipped.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from customfit.errors import InputTypeError
from customfit.errors import InputValueError
from customfit.errors import NotCompiledError
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


def check_model(model: Any) -> None:
    if isinstance(model, keras.Model):
        return
    hint = "pass a keras.Model (a CustomModel, Sequential or functional model)"
    if callable(model) and not hasattr(model, "trainable_weights"):
        hint = f"call the builder first: ManualLoop({_name(model)}())"
    elif type(model).__module__.startswith(("tf_keras", "keras.api._v2")):
        hint = (
            "build the model with Keras 3 (`import keras`), not tf_keras / "
            "tf.keras of Keras 2"
        )
    raise InputTypeError(
        message(
            "ManualLoop(model): `model` must be a keras.Model instance.",
            expected="a CustomModel or any Keras 3 keras.Model",
            received=f"model={_name(model)} (type: {type(model).__name__})",
            fix=hint,
        )
    )


def check_compiled(model: keras.Model, method: str) -> None:
    if not model.compiled:
        raise NotCompiledError(
            message(
                f"ManualLoop.{method}: the model must be compiled first.",
                expected="a model on which compile(...) was called",
                received=f"{type(model).__name__} named {model.name!r}, "
                "never compiled",
                fix="call model.compile(optimizer=..., loss=..., "
                f"metrics=...) before ManualLoop(model).{method}(...)",
            )
        )


def check_epochs(epochs: Any, initial_epoch: Any) -> None:
    for name, value in (("epochs", epochs), ("initial_epoch", initial_epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputTypeError(
                message(
                    f"`{name}` must be a whole number.",
                    expected=f"{name}=<int>",
                    received=f"{name}={value!r} (type: {type(value).__name__})",
                    fix=f"pass {name}=int(...)",
                )
            )
    if epochs < 0 or initial_epoch < 0 or epochs < initial_epoch:
        raise InputValueError(
            message(
                "`epochs` is the index of the last epoch, so it must be at "
                "least `initial_epoch` (both >= 0).",
                expected="0 <= initial_epoch <= epochs",
                received=f"epochs={epochs}, initial_epoch={initial_epoch}",
                fix="pass the total number of epochs as `epochs` (to train "
                "3 more epochs after 5, pass initial_epoch=5, epochs=8)",
            )
        )


def check_callbacks(callbacks: Any) -> None:
    if callbacks is None or isinstance(callbacks, keras.callbacks.CallbackList):
        return
    for callback in keras.tree.flatten(callbacks):
        if not isinstance(callback, keras.callbacks.Callback):
            raise InputTypeError(
                message(
                    "`callbacks` must hold keras.callbacks.Callback instances.",
                    expected="a list of Keras 3 callbacks, e.g. "
                    "[keras.callbacks.EarlyStopping()]",
                    received=f"{_name(callback)} (type: "
                    f"{type(callback).__name__})",
                    fix="subclass keras.callbacks.Callback (from Keras 3, "
                    "not tf_keras), or instantiate the class: "
                    "EarlyStopping() rather than EarlyStopping",
                )
            )


def check_weights(sample_weight: Any, class_weight: Any) -> None:
    if sample_weight is not None and class_weight is not None:
        raise InputValueError(
            message(
                "`sample_weight` and `class_weight` cannot both be given.",
                expected="one of them, or neither",
                received=f"sample_weight=<{type(sample_weight).__name__}>, "
                f"class_weight={class_weight}",
                fix="fold the class weights into the sample weights: "
                "sample_weight = sample_weight * class_weights[y]",
            )
        )


def check_validation_split(x: Any, validation_split: float) -> None:
    if not 0.0 < validation_split < 1.0:
        raise InputValueError(
            message(
                "`validation_split` is the fraction of samples held out.",
                expected="0 < validation_split < 1",
                received=f"validation_split={validation_split}",
                fix="pass a fraction such as validation_split=0.2",
            )
        )
    if isinstance(x, (keras.utils.PyDataset,)) or hasattr(x, "element_spec"):
        raise InputValueError(
            message(
                "`validation_split` works only with array input, not with "
                "a dataset (a dataset cannot be split without reading it).",
                expected="numpy arrays or tensors as `x`, or "
                "`validation_data=`",
                received=f"x=<{type(x).__name__}>, "
                f"validation_split={validation_split}",
                fix="pass validation_data=<a second dataset>, e.g. from "
                "dataset.take(n) and dataset.skip(n)",
            )
        )


def check_validation_structure(x: Any, y: Any, validation_data: Any) -> None:
    train = element_structure(x)
    validation = element_structure(validation_data)
    try:
        keras.tree.assert_same_structure(train, validation)
    except (ValueError, TypeError):
        raise InputValueError(
            message(
                "`validation_data` must have the same structure of inputs "
                "as the training data.",
                expected=f"inputs structured as {train}",
                received=f"inputs structured as {validation}",
                fix="build the validation data the same way as `x` "
                "(same dict keys, same tuple length)",
            )
        ) from None


def _name(value: Any) -> str:
    name = getattr(value, "__qualname__", None) or getattr(
        value, "__name__", None
    )
    if name and callable(value):
        kind = "function" if not isinstance(value, type) else "class"
        return f"<{kind} {name}>"
    return f"<{type(value).__name__}>"


def check_input(
    x: Any,
    y: Any = None,
    *,
    sample_weight: Any = None,
    batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    argument: str = "x",
) -> None:
    """Raises a customfit error if `x` (with `y`) cannot be batched as given.

    Args:
        x: The input, as passed to `fit`, `evaluate` or `predict`.
        y: The targets, as passed.
        sample_weight: The sample weights, as passed.
        batch_size: The batch size, as passed.
        steps_per_epoch: The steps per epoch (or `steps`), as passed.
        argument: The argument name used in error messages.

    Raises:
        InputValueError: For a value that cannot work (see `batches`).
        InputTypeError: For `x` of an unsupported type.
    """
    _check_steps(steps_per_epoch, argument)
    if x is None:
        raise InputValueError(
            message(
                f"`{argument}` is missing.",
                expected="arrays, a dict of arrays, or a batched "
                "tf.data.Dataset",
                received=f"{argument}=None",
                fix=f"pass your training data as `{argument}`",
            )
        )
    if isinstance(x, tf.data.Dataset):
        _check_dataset(
            x, y, sample_weight, batch_size, steps_per_epoch, argument
        )
    elif isinstance(x, keras.utils.PyDataset):
        return
    else:
        _check_arrays(x, y, sample_weight, argument)


def element_structure(x: Any, y: Any = None) -> Any:
    """The nested structure of one input's `x` part (for comparing inputs).

    Args:
        x: Arrays, a dict of arrays, or a dataset.
        y: The targets, when `x` holds only inputs.

    Returns:
        The structure of `x` with every leaf replaced by `None`.
    """
    if isinstance(x, tf.data.Dataset):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(x.element_spec)
    elif isinstance(x, tuple) and y is None and len(x) in (2, 3):
        x = x[0]  # validation_data=(x_val, y_val[, sample_weight_val])
    return tf.nest.map_structure(lambda _: None, x)


def _check_steps(steps: int | None, argument: str) -> None:
    name = "steps" if argument != "x" else "steps_per_epoch"
    if steps is None:
        return
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise InputTypeError(
            message(
                f"`{name}` must be a whole number.",
                expected=f"{name}=<int >= 1> or None",
                received=f"{name}={steps!r} (type: {type(steps).__name__})",
                fix=f"pass {name}=int(...)",
            )
        )
    if steps < 1 and steps != -1:
        raise InputValueError(
            message(
                f"`{name}` must be at least 1.",
                expected=f"{name} >= 1, or None for one pass over the data",
                received=f"{name}={steps}",
                fix=f"pass {name}=1 or more, or leave it out",
            )
        )


def _check_dataset(dataset, y, sample_weight, batch_size, steps, argument):
    for name, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            raise InputValueError(
                message(
                    f"`{name}` cannot be given when `{argument}` is a "
                    "tf.data.Dataset.",
                    expected=f"{name}=None, with the dataset yielding "
                    "(x, y) or (x, y, sample_weight)",
                    received=f"{name}=<{type(value).__name__}>",
                    fix=f"put the {name} into the dataset: "
                    "tf.data.Dataset.from_tensor_slices((x, y, ...)), "
                    f"and drop the `{name}` argument",
                )
            )
    if batch_size is not None:
        raise InputValueError(
            message(
                f"`batch_size` cannot be given when `{argument}` is a "
                "tf.data.Dataset: the dataset sets its own batches.",
                expected="batch_size=None",
                received=f"batch_size={batch_size}",
                fix="drop `batch_size`, or batch the dataset with "
                "dataset.batch(...)",
            )
        )
    cardinality = int(dataset.cardinality())
    if cardinality == 0:
        raise InputValueError(
            message(
                f"`{argument}` is an empty dataset.",
                expected="a dataset with at least one batch",
                received=f"{argument}=<{type(dataset).__name__}> with "
                "cardinality 0",
                fix="check the dataset's source, filters, take()/skip(), "
                "and that batch(..., drop_remainder=True) leaves a batch",
            )
        )
    if cardinality == tf.data.INFINITE_CARDINALITY and steps is None:
        raise InputValueError(
            message(
                f"`steps_per_epoch` is required when `{argument}` is an "
                "infinite dataset.",
                expected="steps_per_epoch=<int>, or a dataset without "
                ".repeat()",
                received=f"steps_per_epoch=None, {argument}="
                f"<{type(dataset).__name__} element_spec="
                f"{dataset.element_spec}>",
                fix="pass steps_per_epoch=<batches per epoch>, or remove "
                ".repeat()",
            )
        )
    components = tf.nest.flatten(dataset.element_spec)
    if any(
        isinstance(spec, tf.TensorSpec) and spec.shape.rank == 0
        for spec in components
    ):
        raise InputValueError(
            message(
                f"`{argument}` looks unbatched: a batched dataset yields "
                "tensors with a batch dimension first, and this one yields "
                "scalars.",
                expected="a batched dataset, e.g. dataset.batch(64)",
                received=f"element_spec={dataset.element_spec}",
                fix="call .batch(batch_size) on the dataset before passing it",
            )
        )


def _check_arrays(x, y, sample_weight, argument):
    lengths = {}
    for name, value in (
        (argument, x),
        ("y", y),
        ("sample_weight", sample_weight),
    ):
        for leaf in tf.nest.flatten(value):
            if leaf is None:
                continue
            shape = getattr(leaf, "shape", None)
            if shape is None or len(shape) == 0:
                continue
            lengths.setdefault(name, set()).add(int(shape[0]))
    counts = set().union(*lengths.values()) if lengths else set()
    if len(counts) > 1:
        received = ", ".join(
            f"{name}: {sorted(n)}" for name, n in lengths.items()
        )
        raise InputValueError(
            message(
                f"`{argument}`, `y` and `sample_weight` must hold the same "
                "number of samples.",
                expected="arrays whose first dimensions are equal",
                received=f"first dimensions {received}",
                fix="slice the arrays to the same length, or check that "
                "x and y come from the same split",
            )
        )
    if 0 in counts:
        raise InputValueError(
            message(
                f"`{argument}` holds no samples.",
                expected="arrays with at least one sample",
                received=f"first dimension 0 in {argument}",
                fix="check how the arrays were loaded or sliced",
            )
        )
