"""Every input check customfit runs at the door, before any step.

The arguments on their own (`ARGUMENTS`, `check_call`), the data on its own
(`check_input`) and the data against the model (`check_against_model`).
They read only shapes, dtypes and, for arrays, the label values; they never
iterate a dataset (that would change the batches and shuffles the run then
sees). Checks that need a built model are skipped until it is built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import types
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from customfit.errors import HookError
from customfit.errors import InputTypeError
from customfit.errors import InputValueError
from customfit.errors import NotCompiledError


@dataclasses.dataclass(frozen=True)
class Condition:
    """A fact about a call that an argument may exclude."""

    text: str
    holds: Callable[[dict[str, Any]], bool]


@dataclasses.dataclass(frozen=True)
class Argument:
    """One argument's contract: checked by `check_call`, rendered in the docs.

    Attributes:
        name: The argument's name.
        methods: Where it is an argument: "ManualLoop", "fit", "evaluate",
            "predict" or "compile" (customfit's options of `compile`).
        types: The types it accepts (a bool is not an int here); empty when
            `check` alone decides. A name "module.Class" is imported late.
        optional: Whether None is accepted.
        low: The smallest value accepted (of each item, for a list).
        below: Values must stay below this.
        choices: The only values accepted, when not empty.
        excludes: (other argument or Condition, fix) pairs: given together
            with this argument, the call is refused with that fix.
        check: Checks what types and domain cannot say; its docstring's
            first line is what the docs show it accepts.
    """

    name: str
    methods: tuple[str, ...]
    types: tuple[type | str, ...] = ()
    optional: bool = True
    low: float | None = None
    below: float | None = None
    choices: tuple[Any, ...] = ()
    excludes: tuple[tuple[str | Condition, str], ...] = ()
    check: Callable[..., None] | None = None


def _x_yields_weights(call):
    """Whether the batches of `x` are (x, y, sample_weight), as fit reads."""
    x = call["x"]
    if isinstance(x, keras.utils.PyDataset):
        return isinstance(x[0], tuple) and len(x[0]) == 3
    spec = getattr(x, "element_spec", None)
    return isinstance(spec, tuple) and len(spec) == 3


_PATH = str | os.PathLike
_DATASET_TYPES = (tf.data.Dataset, keras.utils.PyDataset, types.GeneratorType)
_X_IS_DATASET = Condition(
    "`x` is a dataset (tf.data, PyDataset or generator)",
    lambda call: isinstance(call["x"], _DATASET_TYPES),
)
_VALIDATION_IS_DATASET = Condition(
    "`validation_data` is a dataset",
    lambda call: isinstance(call["validation_data"], _DATASET_TYPES),
)
_SEVERAL_OUTPUTS = Condition(
    "the model has several outputs",
    lambda call: len(_outputs(call["model"])) > 1,
)
_WEIGHTS_IN_DATA = Condition("`x` yields sample weights", _x_yields_weights)


def _check_model(model, call, name):
    """A Keras 3 keras.Model: a CustomModel, Sequential or functional model."""
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
        "ManualLoop(model): `model` must be a keras.Model instance.",
        expected="a CustomModel or any Keras 3 keras.Model",
        received=f"model={_name(model)} (type: {type(model).__name__})",
        fix=hint,
    )


def _check_callbacks(callbacks, call, name):
    """A list of keras.callbacks.Callback instances, or a CallbackList."""
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return
    for callback in keras.tree.flatten(callbacks):
        if not isinstance(callback, keras.callbacks.Callback):
            raise InputTypeError(
                "`callbacks` must hold keras.callbacks.Callback instances.",
                expected="a list of Keras 3 callbacks, e.g. "
                "[keras.callbacks.EarlyStopping()]",
                received=f"{_name(callback)} (type: {type(callback).__name__})",
                fix="subclass keras.callbacks.Callback (from Keras 3, "
                "not tf_keras), or instantiate the class: "
                "EarlyStopping() rather than EarlyStopping",
            )


def _check_data(value, call, name):
    """Arrays or tensors (or a dict, list or tuple of them), a tf.data.Dataset, a keras.utils.PyDataset or a generator."""  # noqa: E501
    if isinstance(value, tf.data.Dataset):
        _check_element_count(value.element_spec, name)
    if isinstance(value, _DATASET_TYPES):
        return
    for leaf in keras.tree.flatten(value):
        if leaf is None or hasattr(leaf, "shape") or hasattr(leaf, "__array__"):
            continue
        kind = "Python numbers" if isinstance(leaf, (int, float)) else None
        raise InputTypeError(
            f"`{name}` holds {kind or type(leaf).__name__}, which Keras "
            "cannot slice into batches.",
            expected="numpy arrays or tensors (a dict, list or tuple of "
            "them), a tf.data.Dataset, a PyDataset or a generator",
            received=f"{name}=<{type(value).__name__}> holding "
            f"{_short(leaf)} (type: {type(leaf).__name__})",
            fix=f"convert it first: {name}=np.asarray({name})",
        )


def _check_arrays_given(value, call, name):
    """Arrays or tensors (or a dict, list or tuple of them)."""
    if isinstance(value, _DATASET_TYPES):
        raise InputTypeError(
            f"`{name}` must be arrays, not a dataset.",
            expected=f"{name} as arrays or tensors, with `x` as arrays",
            received=f"{name}=<{type(value).__name__}>",
            fix=f"put `x` and `{name}` into one dataset, and pass it as x",
        )
    _check_data(value, call, name)


def _check_validation_data(value, call, name):
    """(x_val, y_val) or (x_val, y_val, sample_weight_val), a tf.data.Dataset or a PyDataset, structured as `x`."""  # noqa: E501
    if isinstance(value, (tuple, list)) and not 1 <= len(value) <= 3:
        raise InputValueError(
            f"`validation_data` is a {type(value).__name__} of "
            f"{len(value)} elements; fit reads (x_val, y_val) or "
            "(x_val, y_val, sample_weight_val).",
            expected="validation_data=(x_val, y_val)",
            received=f"validation_data=<{type(value).__name__}> of "
            f"{len(value)} elements",
            fix="group several inputs into one tuple or dict: "
            "validation_data=((a_val, b_val), y_val)",
        )
    _check_data(value, call, name)
    train = _inputs_structure(call["x"], call.get("y"))
    validation = _inputs_structure(value)
    try:
        keras.tree.assert_same_structure(train, validation)
    except (ValueError, TypeError):
        raise InputValueError(
            "`validation_data` must have the same structure of inputs "
            "as the training data.",
            expected=f"inputs structured as {train}",
            received=f"inputs structured as {validation}",
            fix="build the validation data the same way as `x` "
            "(same dict keys, same tuple length)",
        ) from None


def _inputs_structure(x, y=None):
    """The structure of the inputs (`x` part) of `x`, every leaf None."""
    if isinstance(x, tf.data.Dataset):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(x.element_spec)
    elif isinstance(x, tuple) and y is None and len(x) in (2, 3):
        x = x[0]  # validation_data=(x_val, y_val[, sample_weight_val])
    return tf.nest.map_structure(lambda _: None, x)


def _check_class_weight(class_weight, call, name):
    """Maps class indices (int) to weights (float)."""
    for key, weight in class_weight.items():
        if not _is_instance(key, (int,)) or not _is_number(weight):
            raise InputTypeError(
                "`class_weight` maps class indices to weights.",
                expected="a dict {class index (int): weight (float)}",
                received=f"class_weight={class_weight!r}",
                fix="pass e.g. class_weight={0: 1.0, 1: 5.0}",
            )


def _check_epoch_order(initial_epoch, call, name):
    """At most `epochs`: `epochs` is where training ends."""
    epochs = call["epochs"]
    if epochs < initial_epoch:
        raise InputValueError(
            "`epochs` is the index of the last epoch, so it must be at "
            "least `initial_epoch` (both >= 0).",
            expected="0 <= initial_epoch <= epochs",
            received=f"epochs={epochs}, initial_epoch={initial_epoch}",
            fix="pass the total number of epochs as `epochs` (to train "
            "3 more epochs after 5, pass initial_epoch=5, epochs=8)",
        )


_LOOP = ("fit", "evaluate", "predict")
_FIT, _LABELLED = ("fit",), ("fit", "evaluate")
_IN_DATASET = "put it into the dataset: ((x, y, sample_weight) per batch)"
_OWN_BATCHES = "drop it: the dataset sets its own batches"
_NOT_WITH_DATASET = ((_X_IS_DATASET, _IN_DATASET),)
_X_BATCHES = ((_X_IS_DATASET, _OWN_BATCHES),)
_VALIDATION_BATCHES = ((_VALIDATION_IS_DATASET, _OWN_BATCHES),)
_SPLIT = "pass validation_data=<a second dataset>, e.g. dataset.take(n)"
_PER_OUTPUT = "pass sample_weight={output_name: weights, ...} instead"
_FOLD = (
    "fold the class weights into the sample weights: "
    "sample_weight = sample_weight * class_weights[y]"
)
_REQUIRED = {"optional": False}

ARGUMENTS: tuple[Argument, ...] = (
    Argument("model", ("ManualLoop",), check=_check_model, **_REQUIRED),
    Argument("run_eagerly", ("ManualLoop",), (bool,)),
    Argument("backup", ("ManualLoop",), ("customfit.backup.Backup", _PATH)),
    Argument("x", _LOOP, check=_check_data, **_REQUIRED),
    Argument(
        "y", _LABELLED, excludes=_NOT_WITH_DATASET, check=_check_arrays_given
    ),
    Argument("epochs", _FIT, (int,), low=0, **_REQUIRED),
    Argument(
        "verbose",
        _LOOP,
        (str, int, bool),
        choices=("auto", 0, 1, 2),
        **_REQUIRED,
    ),
    Argument("callbacks", _LOOP, check=_check_callbacks),
    Argument(
        "validation_split",
        _FIT,
        (float, int),
        low=0,
        below=1,
        **_REQUIRED,
        excludes=(
            ("validation_data", "pass only one"),
            (_X_IS_DATASET, _SPLIT),
        ),
    ),
    Argument("batch_size", _LOOP, (int,), low=1, excludes=_X_BATCHES),
    Argument("validation_data", _FIT, check=_check_validation_data),
    Argument(
        "shuffle",
        _FIT,
        (bool, int, str),
        choices=(True, False, "batch"),
        **_REQUIRED,
    ),
    Argument(
        "class_weight",
        _FIT,
        (dict,),
        check=_check_class_weight,
        excludes=(
            ("sample_weight", _FOLD),
            (_WEIGHTS_IN_DATA, _FOLD),
            (_SEVERAL_OUTPUTS, _PER_OUTPUT),
        ),
    ),
    Argument(
        "sample_weight",
        _LABELLED,
        excludes=_NOT_WITH_DATASET,
        check=_check_arrays_given,
    ),
    Argument(
        "initial_epoch",
        _FIT,
        (int,),
        low=0,
        check=_check_epoch_order,
        **_REQUIRED,
    ),
    Argument("steps_per_epoch", _FIT, (int,), low=1),
    Argument("validation_steps", _FIT, (int,), low=1),
    Argument(
        "validation_batch_size",
        _FIT,
        (int,),
        low=1,
        excludes=_VALIDATION_BATCHES,
    ),
    Argument("validation_freq", _FIT, (int, list), low=1, **_REQUIRED),
    Argument("steps", ("evaluate", "predict"), (int,), low=1),
    Argument("return_dict", ("evaluate",), (bool,), **_REQUIRED),
    Argument("skip_nonfinite_steps", ("compile",), (bool,), **_REQUIRED),
)


def check_call(method: str, model: Any, arguments: dict[str, Any]) -> None:
    """Checks every argument of one call against its contract, in order.

    Args:
        method: "ManualLoop", "fit", "evaluate", "predict" or "compile".
        model: The model (for "ManualLoop", the `model` argument itself).
        arguments: The call's arguments by name (extra names are ignored).

    Raises:
        NotCompiledError: If `fit` or `evaluate` gets an uncompiled model.
        InputValueError, InputTypeError: For the first argument that breaks
            its contract (see `ARGUMENTS`), or `predict` on an empty
            Sequential model.
    """
    if method in ("fit", "evaluate") and not model.compiled:
        raise NotCompiledError(
            f"ManualLoop.{method}: the model must be compiled first.",
            expected="a model on which compile(...) was called",
            received=f"{type(model).__name__} named {model.name!r}, "
            "never compiled",
            fix="call model.compile(optimizer=..., loss=..., "
            f"metrics=...) before ManualLoop(model).{method}(...)",
        )
    empty = isinstance(model, keras.Sequential) and not model.layers
    if method == "predict" and empty:
        raise InputValueError(
            f"ManualLoop.{method}: the Sequential model has no layers, so "
            "it cannot be built or called.",
            expected="a model with at least one layer",
            received=f"keras.Sequential named {model.name!r}, empty",
            fix="add layers first: model.add(keras.layers.Dense(...)), "
            "or pass them to keras.Sequential([...])",
        )
    call = {**arguments, "model": model}
    for argument in ARGUMENTS:
        if method in argument.methods and argument.name in arguments:
            _check_argument(argument, arguments[argument.name], call)


def _check_argument(argument, value, call):
    name, accepts = argument.name, describe(argument)
    if value is None:
        if argument.optional:
            return
        raise InputValueError(
            f"`{name}` is missing.",
            expected=f"{name}: {accepts}",
            received=f"{name}=None",
            fix=f"pass `{name}`",
        )
    accepted = tuple(_resolve(t) for t in argument.types)
    if accepted and not _is_instance(value, accepted):
        raise InputTypeError(
            f"`{name}` must be {_types_text(argument)}.",
            expected=f"{name}: {accepts}",
            received=f"{name}={_short(value)} (type: {type(value).__name__})",
            fix=f"pass {name} as {accepts}",
        )
    items = value if isinstance(value, list) else [value]
    if not all(_in_domain(argument, item) for item in items):
        raise InputValueError(
            f"`{name}` must be {_domain_text(argument)}.",
            expected=f"{name}: {accepts}",
            received=f"{name}={_short(value)}",
            fix=f"pass {name} as {accepts}",
        )
    for other, fix in argument.excludes if _given(value) else ():
        if isinstance(other, Condition) and other.holds(call):
            raise InputValueError(
                f"`{name}` cannot be given when {other.text}.",
                expected=f"{name} left out when {other.text}",
                received=f"{name}={_short(value)} while {other.text}",
                fix=fix,
            )
        if isinstance(other, str) and _given(call.get(other)):
            raise InputValueError(
                f"`{name}` and `{other}` cannot both be given.",
                expected="one of them, or neither",
                received=f"{name}={_short(value)}, "
                f"{other}={_short(call[other])}",
                fix=fix,
            )
    if argument.check is not None:
        argument.check(value, call, name)


def describe(argument: Argument) -> str:
    """What `argument` accepts, in words (the docs' "accepts" column)."""
    text = _types_text(argument)
    if argument.low is not None:
        text += f", {_domain_text(argument)}"
    if argument.check is not None:
        rule = argument.check.__doc__.splitlines()[0].rstrip(".")
        text = f"{text}; {rule[0].lower()}{rule[1:]}" if text else rule
    return text + (", or None" if argument.optional else "")


_TYPE_WORDS = {
    int: "a whole number",
    float: "a number",
    bool: "True or False",
    str: "a string",
    _PATH: "a directory path",
    list: "a list of whole numbers",
    dict: "a dict",
    "customfit.backup.Backup": "a customfit.Backup",
}


def _types_text(argument):
    if argument.choices:
        return _domain_text(argument)
    words = [_TYPE_WORDS[t] for t in argument.types]
    if float in argument.types:
        words.remove(_TYPE_WORDS[int])
    return " or ".join(words)


def _domain_text(argument):
    if argument.choices:
        return "one of " + ", ".join(repr(c) for c in argument.choices)
    if argument.below is not None:
        return f"{argument.low} <= value < {argument.below}"
    each = " (each)" if list in argument.types else ""
    return f"at least {argument.low}{each}"


def _in_domain(argument, value):
    if argument.choices:  # verbose=True is 1 and shuffle=1 is True, as in fit
        return value in argument.choices
    low, below = argument.low, argument.below
    return (low is None or value >= low) and (below is None or value < below)


def _is_instance(value, accepted):
    if isinstance(value, bool):
        return bool in accepted
    if isinstance(value, list) and list in accepted:
        return all(_is_instance(item, (int,)) for item in value)
    return (
        isinstance(value, accepted)
        or (isinstance(value, np.integer) and int in accepted)
        or (isinstance(value, np.floating) and float in accepted)
    )


def _is_number(value):
    return isinstance(value, (int, float, np.number)) and not isinstance(
        value, bool
    )


def _resolve(accepted):
    if isinstance(accepted, str):  # imported late: that module imports this
        module, _, name = accepted.rpartition(".")
        return getattr(importlib.import_module(module), name)
    return accepted


def _given(value):
    """Whether an argument was given: not None, not a zero fraction."""
    return value is not None and not (_is_number(value) and value == 0)


def _short(value):
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"<{type(value).__name__} of shape {tuple(shape)}>"
    text = repr(value)
    return text if len(text) <= 60 else f"<{type(value).__name__}>"


def _name(value):
    name = getattr(value, "__qualname__", None)
    if name and callable(value):
        kind = "class" if isinstance(value, type) else "function"
        return f"<{kind} {name}>"
    return f"<{type(value).__name__}>"


def _outputs(model):
    return (getattr(model, "outputs", None) or []) if model.built else []


def check_input(
    x: Any,
    y: Any = None,
    *,
    sample_weight: Any = None,
    steps_per_epoch: int | None = None,
    argument: str = "x",
) -> None:
    """Raises a customfit error if `x` (with `y`) cannot be batched as given.

    Args:
        x: The input, as passed to `fit`, `evaluate` or `predict`.
        y: The targets, as passed.
        sample_weight: The sample weights, as passed.
        steps_per_epoch: The steps per epoch (or `steps`), as passed.
        argument: The argument name used in error messages.

    Raises:
        InputValueError: For an empty, unbatched or endless dataset, or
            arrays of different or zero lengths.
    """
    if isinstance(x, tf.data.Dataset):
        _check_dataset(x, steps_per_epoch, argument)
    elif not isinstance(x, keras.utils.PyDataset):
        _check_arrays(x, y, sample_weight, argument)


def _check_dataset(dataset, steps, argument):
    cardinality = int(dataset.cardinality())
    if cardinality == 0:
        raise InputValueError(
            f"`{argument}` is an empty dataset.",
            expected="a dataset with at least one batch",
            received=f"{argument}=<{type(dataset).__name__}> with "
            "cardinality 0",
            fix="check the dataset's source, filters, take()/skip(), "
            "and that batch(..., drop_remainder=True) leaves a batch",
        )
    if cardinality == tf.data.INFINITE_CARDINALITY and steps is None:
        name = "validation_steps" if argument != "x" else "steps_per_epoch"
        raise InputValueError(
            f"`{name}` is required when `{argument}` is an infinite dataset.",
            expected=f"{name}=<int>, or a dataset without .repeat()",
            received=f"{name}=None, {argument}="
            f"<{type(dataset).__name__} element_spec="
            f"{dataset.element_spec}>",
            fix=f"pass {name}=<batches per epoch> (`steps` in evaluate "
            "and predict), or remove .repeat()",
        )
    if any(
        isinstance(spec, tf.TensorSpec) and spec.shape.rank == 0
        for spec in tf.nest.flatten(dataset.element_spec)
    ):
        raise InputValueError(
            f"`{argument}` looks unbatched: a batched dataset yields "
            "tensors with a batch dimension first, and this one yields "
            "scalars.",
            expected="a batched dataset, e.g. dataset.batch(64)",
            received=f"element_spec={dataset.element_spec}",
            fix="call .batch(batch_size) on the dataset before passing it",
        )


def _check_arrays(x, y, sample_weight, argument):
    lengths, data = {}, {argument: x, "y": y, "sample_weight": sample_weight}
    for name, value in data.items():
        for leaf in tf.nest.flatten(value):
            shape = getattr(leaf, "shape", None)
            if shape is not None and len(shape) > 0:
                lengths.setdefault(name, set()).add(int(shape[0]))
    counts = set().union(*lengths.values())
    if len(counts) > 1:
        received = ", ".join(f"{k}: {sorted(n)}" for k, n in lengths.items())
        raise InputValueError(
            f"`{argument}`, `y` and `sample_weight` must hold the same "
            "number of samples.",
            expected="arrays whose first dimensions are equal",
            received=f"first dimensions {received}",
            fix="slice the arrays to the same length, or check that "
            "x and y come from the same split",
        )
    if 0 in counts:
        raise InputValueError(
            f"`{argument}` holds no samples.",
            expected="arrays with at least one sample",
            received=f"first dimension 0 in {argument}",
            fix="check how the arrays were loaded or sliced",
        )


def _check_element_count(element_spec, argument):
    if isinstance(element_spec, tuple) and len(element_spec) > 3:
        raise InputValueError(
            f"`{argument}` yields {len(element_spec)} elements per batch; "
            "fit reads at most three: (x, y, sample_weight).",
            expected="batches of x, (x,), (x, y) or (x, y, sample_weight)",
            received=f"element_spec={element_spec}",
            fix="group several inputs into a tuple or dict as the first "
            "element: dataset.map(lambda a, b, y: ((a, b), y))",
        )


def check_against_model(
    model: keras.Model, element_spec: Any, *, y: Any = None, argument: str = "x"
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
    inputs = getattr(model, "inputs", None) if model.built else None
    if inputs:
        _check_features({t.name: t for t in inputs}, x_spec, argument)
    if not _uses_compiled_loss(model):
        return
    if y_spec is None:
        raise InputValueError(
            f"`{argument}` holds no labels, and the loss needs them.",
            expected=f"labels with the features: {argument}=(x, y) "
            "per batch, or `y` beside arrays",
            received=f"only features: {x_spec}",
            fix="pass validation_data=(x_val, y_val)"
            if argument == "validation_data"
            else "pass the labels: fit(x, y) or a dataset of (x, y)",
        )
    outputs = _outputs(model)
    if len(outputs) == 1:
        labels = "y" if y is not None else argument
        _check_labels(model, outputs[0], y_spec, y, labels)


def _uses_compiled_loss(model):
    """Whether the step computes `compile(loss=...)` on (x, y) as Keras does."""
    return (
        model.compiled
        and model.loss is not None
        and all(
            getattr(type(model), hook).__module__.startswith(
                ("keras.", "customfit.")
            )
            for hook in ("train_step", "test_step", "compute_loss")
        )
    )


def _check_features(inputs, x_spec, argument):
    """Checks each feature's keys, dtype and shape against the model input."""
    flat = tf.nest.flatten(x_spec)
    if isinstance(x_spec, dict):
        if set(x_spec) != set(inputs):
            raise InputValueError(
                f"The keys of `{argument}` must name the model's inputs.",
                expected=f"a dict with keys {sorted(inputs)}",
                received=f"a dict with keys {sorted(x_spec)}",
                fix="rename the keys to match the names given to "
                "keras.Input(..., name=...), or rename the model's inputs",
            )
        pairs = [(x_spec[k], k, inputs[k]) for k in x_spec]
    elif len(flat) == len(inputs):
        pairs = [
            (s, *item) for s, item in zip(flat, inputs.items(), strict=True)
        ]
    else:
        pairs = []
    for spec, name, tensor in pairs:
        if getattr(spec, "dtype", None) == tf.string and (
            keras.backend.standardize_dtype(tensor.dtype) != "string"
        ):
            raise InputTypeError(
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
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank is None:
            continue
        expected, got = list(tensor.shape), spec.shape.as_list()
        if len(got) == len(expected) + 1 and got[-1] == 1:
            got = got[:-1]  # Keras squeezes a trailing 1
        elif len(got) + 1 == len(expected) and expected[-1] == 1:
            expected = expected[:-1]  # and adds one
        compatible = tf.TensorShape(got[1:]).is_compatible_with(expected[1:])
        if len(got) == len(expected) and compatible:
            continue
        raise InputValueError(
            f"The features of `{argument}` do not fit the model's input "
            f"{name!r}.",
            expected=f"features of shape {tuple(tensor.shape)}",
            received=f"features of shape {tuple(spec.shape)}",
            fix="select or reshape the features to that shape, or build "
            f"the model with keras.Input(shape={tuple(spec.shape)[1:]})",
        )


def _check_labels(model, output, y_spec, y, labels):
    loss = getattr(model.loss, "fn", model.loss)  # a Loss wraps a function
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", "")
    shape = getattr(y_spec, "shape", None)
    if shape is None or shape.rank is None:
        return
    rank, classes = len(output.shape), output.shape[-1]
    if name == "sparse_categorical_crossentropy":
        if shape.rank != rank - 1 and (shape.rank != rank or shape[-1] != 1):
            raise InputValueError(
                f"The labels of `{labels}` do not fit the loss {name}: "
                "it takes one integer class index per sample.",
                expected=f"labels of shape (batch,) for outputs of shape "
                f"{tuple(output.shape)}",
                received=f"labels of shape {tuple(shape)}",
                fix="pass class indices (y.argmax(-1) for one-hot "
                "labels), or use loss=CategoricalCrossentropy for "
                "one-hot labels",
            )
        y = np.asarray([] if y is None else y)
        if not classes or not y.size or not np.issubdtype(y.dtype, np.number):
            return
        low, high = y.min(), y.max()
        if low < 0 or high >= classes:
            raise InputValueError(
                f"The labels of `{labels}` are out of range for {name}: the "
                f"model has {classes} outputs, so class indices run from 0 "
                f"to {classes - 1}.",
                expected=f"0 <= y < {classes}",
                received=f"labels from {low} to {high}",
                fix=f"check the labels, or give the last layer "
                f"{int(high) + 1} units",
            )
    elif name == "categorical_crossentropy" and (
        shape.rank != rank or shape[-1] not in (None, classes)
    ):
        raise InputValueError(
            f"The labels of `{labels}` do not fit the loss {name}: it "
            "takes one-hot (or probability) labels, one column per class.",
            expected=f"labels of shape (batch, {classes})",
            received=f"labels of shape {tuple(shape)}",
            fix="one-hot encode them (keras.utils.to_categorical(y, "
            f"{classes})), or use loss=SparseCategoricalCrossentropy "
            "for integer class indices",
        )


_HOOK_RESULTS = {
    "forward": "the model's outputs for `x` (y_pred)",
    "compute_loss": "the loss, a scalar tensor",
    "compute_gradients": "a list of gradients, one per variable (None for "
    "a variable the loss does not reach)",
}


def check_hook_result(
    model: keras.Model, hook: str, result: Any, variables: Any = None
) -> None:
    """Raises `HookError` if a `CustomModel` hook returned an unusable value.

    A compiled step runs it once, while it is traced, and then pays nothing.

    Args:
        model: The model whose hook ran.
        hook: "forward", "compute_loss" or "compute_gradients".
        result: What the hook returned.
        variables: For "compute_gradients", the variables it was given.
    """
    if result is not None and (
        variables is None
        or (isinstance(result, (list, tuple)) and len(result) == len(variables))
    ):
        return
    received = "None" if result is None else f"<{type(result).__name__}>"
    if isinstance(result, (list, tuple)):
        received += f" of {len(result)} entries, for {len(variables)} variables"
    raise HookError(
        f"{type(model).__name__}.{hook} returned {received}; "
        f"`{hook}` must return {_HOOK_RESULTS[hook]}.",
        expected=_HOOK_RESULTS[hook],
        received=received,
        fix=f"end your `{hook}` override with `return ...`, e.g. "
        f"`return super().{hook}(...)`",
    )


_WRITES = ("Assign", "ResourceApply", "ResourceSparseApply", "ResourceScatter")


@contextlib.contextmanager
def first_update(model: keras.Model, variables: Any):
    """Warns once if the model's first update leaves its variables unchanged.

    Wraps the `apply_gradients` of every training step; after the first it
    passes straight through. A traced step looks for ops writing a variable
    among those the update created; an eager step compares the values.

    Args:
        model: The model being trained.
        variables: The trainable variables the update should change.
    """
    if getattr(model, "_first_update_seen", False):
        yield
        return
    if tf.executing_eagerly():
        before = [v.numpy() for v in variables]
        yield
        unchanged = all(
            np.array_equal(b, v.numpy())
            for b, v in zip(before, variables, strict=True)
        )
    else:
        graph = tf.compat.v1.get_default_graph()
        start = len(graph.get_operations())
        yield
        created = graph.get_operations()[start:]
        unchanged = not any(op.type.startswith(_WRITES) for op in created)
    model._first_update_seen = True
    if unchanged:
        warnings.warn(
            f"The first training step of {type(model).__name__} left every "
            "trainable variable unchanged. Likely cause: an "
            "`apply_gradients` override that does not call "
            "`super().apply_gradients(gradients, variables)` (or an "
            "optimizer's apply).",
            stacklevel=4,
        )
