"""Input checks at the door: the argument contract, data, hooks, fuzzing.

Every bad call here must raise a customfit error (a ValueError or TypeError)
naming the argument, what was expected, what was received and the fix,
before any step: the weights and `optimizer.iterations` stay as they were.
"""

import os

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
        r"labels of `y` are out of range[\s\S]*labels from 0 to 5",
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
    (
        "batch-size-not-an-int",
        lambda: dict(x=X, y=Y, batch_size=2.5),
        customfit.InputTypeError,
        "`batch_size` must be a whole number",
    ),
    (
        "validation-freq-not-an-int",
        lambda: dict(
            x=dataset(), validation_data=dataset(), validation_freq=1.5
        ),
        customfit.InputTypeError,
        "`validation_freq` must be a whole number or a list",
    ),
    (
        "validation-split-out-of-range",
        lambda: dict(x=X, y=Y, validation_split=1.0),
        customfit.InputValueError,
        "`validation_split` must be 0 <= value < 1",
    ),
    (
        "shuffle-as-a-string",
        lambda: dict(x=X, y=Y, shuffle="False"),
        customfit.InputValueError,
        "`shuffle` must be one of True, False, 'batch'",
    ),
    (
        "verbose-out-of-range",
        lambda: dict(x=dataset(), verbose=3),
        customfit.InputValueError,
        "`verbose` must be one of 'auto', 0, 1, 2",
    ),
]

# What keras.Model.fit does with the calls of BAD_FIT_CALLS it accepts
# (docs/errors.md shows them beside what it raised or how far it trained).
FIT_DOES = {
    "empty-dataset": "an empty History, yet the optimizer's step count moves",
    "infinite-without-steps": "the first epoch never ends",
    "validation-structure-differs": "works, with a warning that the "
    "structures differ (customfit asks for the same structure)",
    "batch-size-with-dataset": "ignores batch_size: the dataset's batches",
    "steps-per-epoch-zero": "ignores steps_per_epoch=0: the whole dataset",
    "epochs-below-initial-epoch": "trains nothing and returns an empty History",
    "batch-size-zero": "ignores batch_size=0: batches of 32",
    "validation-split-and-data": "ignores validation_split",
    "shuffle-as-a-string": "shuffles: any string but 'batch' counts as True",
    "verbose-out-of-range": "prints nothing: the progress bar knows 0, 1, 2",
}


@pytest.mark.parametrize(
    "make_kwargs, error, pattern",
    [case[1:] for case in BAD_FIT_CALLS],
    ids=[case[0] for case in BAD_FIT_CALLS],
)
def test_bad_fit_call_fails_at_the_door(make_kwargs, error, pattern):
    model = build()
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(error, match=pattern) as raised:
        ManualLoop(model).fit(**{"verbose": 0, **make_kwargs()})
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


def test_every_argument_has_a_contract():
    import inspect

    methods = {
        "ManualLoop": ManualLoop.__init__,
        "fit": ManualLoop.fit,
        "evaluate": ManualLoop.evaluate,
        "predict": ManualLoop.predict,
    }
    for method, function in methods.items():
        parameters = set(inspect.signature(function).parameters) - {"self"}
        contracted = {
            a.name for a in customfit.checks.ARGUMENTS if method in a.methods
        }
        assert contracted == parameters, method
    compile_options = {
        a.name for a in customfit.checks.ARGUMENTS if "compile" in a.methods
    }
    own = set(inspect.signature(CustomModel.compile).parameters)
    assert compile_options <= own


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (
            lambda m: ManualLoop(m, run_eagerly="yes"),
            customfit.InputTypeError,
            "`run_eagerly` must be True or False",
        ),
        (
            lambda m: ManualLoop(m, backup=3),
            customfit.InputTypeError,
            "`backup` must be a customfit.Backup or a directory path",
        ),
        (
            lambda m: ManualLoop(m).fit(X, Y, verbose=3),
            customfit.InputValueError,
            r"`verbose` must be one of 'auto', 0, 1, 2",
        ),
        (
            lambda m: ManualLoop(m).fit(X, Y, shuffle="yes"),
            customfit.InputValueError,
            "`shuffle` must be one of True, False, 'batch'",
        ),
        (
            lambda m: ManualLoop(m).fit(X, Y, validation_freq=[1, 0]),
            customfit.InputValueError,
            r"`validation_freq` must be at least 1 \(each\)",
        ),
        (
            lambda m: ManualLoop(m).fit(X, Y, class_weight={"a": 1.0}),
            customfit.InputTypeError,
            "`class_weight` maps class indices to weights",
        ),
        (
            lambda m: ManualLoop(m).evaluate(X, Y, batch_size=0),
            customfit.InputValueError,
            "`batch_size` must be at least 1",
        ),
        (
            lambda m: ManualLoop(m).evaluate(X, Y, steps=0),
            customfit.InputValueError,
            "`steps` must be at least 1",
        ),
        (
            lambda m: ManualLoop(m).evaluate(X, Y, return_dict="yes"),
            customfit.InputTypeError,
            "`return_dict` must be True or False",
        ),
        (
            lambda m: ManualLoop(m).predict(X, steps=2.0),
            customfit.InputTypeError,
            "`steps` must be a whole number",
        ),
        (
            lambda m: ManualLoop(m).fit(
                X, Y, validation_data=(X, Y, None, None)
            ),
            customfit.InputValueError,
            "`validation_data` is a tuple of 4 elements",
        ),
        (
            lambda m: ManualLoop(m).fit(
                X, Y, validation_data=dataset(), validation_batch_size=4
            ),
            customfit.InputValueError,
            "`validation_batch_size` cannot be given when `validation_data`",
        ),
        (
            lambda m: m.compile(loss="mse", skip_nonfinite_steps="yes"),
            customfit.InputTypeError,
            "`skip_nonfinite_steps` must be True or False",
        ),
    ],
)
def test_each_argument_is_checked_at_the_door(call, error, pattern):
    model = build()
    with pytest.raises(error, match=pattern) as raised:
        call(model)
    for part in ("Expected: ", "Received: ", "Fix: "):
        assert part in str(raised.value)
    assert model.optimizer.iterations.numpy() == 0


def test_a_validation_dataset_is_fine_with_fit_batch_size():
    model = build()
    ManualLoop(model).fit(
        X, Y, batch_size=8, validation_data=dataset(), verbose=0
    )
    assert model.optimizer.iterations.numpy() == 5


def test_a_step_of_its_own_may_take_data_without_labels():
    class Unsupervised(CustomModel):
        def compute_loss(self, x, y, y_pred, sample_weight, training=True):
            return keras.ops.mean(keras.ops.square(y_pred))

    inputs = keras.Input((4,))
    model = Unsupervised(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    ManualLoop(model).fit(X, validation_data=X, batch_size=20, verbose=0)
    assert model.optimizer.iterations.numpy() == 2


# Hook contracts: checked where the step is traced, so the compiled step
# pays nothing; both drivers run them.


class NoReturnGradients(CustomModel):
    def compute_gradients(self, tape, loss, variables):
        tape.gradient(loss, variables)  # forgot `return`


class NoReturnLoss(CustomModel):
    def compute_loss(self, *args, **kwargs):
        super().compute_loss(*args, **kwargs)  # forgot `return`


class NoSuper(CustomModel):
    def apply_gradients(self, gradients, variables):
        self.seen = len(gradients)  # forgot super().apply_gradients(...)


def _functional(cls, **compile_options):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="features")
    model = cls(inputs, keras.layers.Dense(2)(inputs))
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_options,
    )
    return model


@pytest.mark.parametrize("driver", ["fit", "manual"])
@pytest.mark.parametrize(
    "cls, pattern",
    [
        (NoReturnGradients, r"NoReturnGradients\.compute_gradients returned"),
        (NoReturnLoss, r"NoReturnLoss\.compute_loss returned None"),
    ],
)
def test_a_hook_that_returns_nothing_is_named(driver, cls, pattern):
    model = _functional(cls)
    weights = model.get_weights()
    fit = model.fit if driver == "fit" else ManualLoop(model).fit
    with pytest.raises(customfit.errors.HookError, match=pattern) as raised:
        fit(X, Y, batch_size=8, verbose=0)
    assert "Fix: end your" in str(raised.value)
    assert model.optimizer.iterations.numpy() == 0
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_an_update_that_skips_super_warns_once(run_eagerly):
    model = _functional(NoSuper)
    with pytest.warns(UserWarning, match="left every trainable variable") as w:
        ManualLoop(model, run_eagerly=run_eagerly).fit(
            X, Y, batch_size=8, epochs=2, verbose=0
        )
    assert sum("left every" in str(r.message) for r in w) == 1


@pytest.mark.parametrize("run_eagerly", [False, True])
@pytest.mark.parametrize("skip", [False, True])
def test_the_default_update_does_not_warn(run_eagerly, skip):
    import warnings

    model = _functional(CustomModel, skip_nonfinite_steps=skip)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ManualLoop(model, run_eagerly=run_eagerly).fit(
            X, Y, batch_size=8, verbose=0
        )
    assert not [w for w in caught if "left every" in str(w.message)]


def test_the_clipping_example_works_with_a_variable_without_gradient():
    class Clipped(CustomModel):  # as in docs/customizing.md
        def apply_gradients(self, gradients, variables):
            gradients = [
                None if g is None else keras.ops.clip(g, -0.1, 0.1)
                for g in gradients
            ]
            super().apply_gradients(gradients, variables)

    class WithUnused(Clipped):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)
            self.unused = self.add_weight(shape=(1,), initializer="ones")

        def call(self, x):
            return self.dense(x)

    model = WithUnused()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.warns(UserWarning, match="Gradients do not exist"):
        ManualLoop(model).fit(X, Y, batch_size=8, verbose=0)
    assert model.optimizer.iterations.numpy() == 5


def test_the_docs_show_the_argument_contract_of_the_code():
    from tests.conftest import load_script

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tool = load_script(
        os.path.join(repo, "docs", "_tools", "arguments_table.py")
    )
    with open(tool.errors_table.PAGE) as f:
        page = f.read()
    new = tool.errors_table.replace_between(
        page, tool.START, tool.END, tool.tables()
    )
    assert new == page, (
        "docs/errors.md's argument contract is out of date: run "
        "python docs/_tools/arguments_table.py"
    )


def test_every_call_fit_accepts_says_what_fit_did_instead():
    # ManualLoop refuses each call of BAD_FIT_CALLS; where keras.Model.fit
    # raised nothing (as docs/errors.md shows), FIT_DOES must say how fit
    # got it wrong.
    from tests.conftest import load_script

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tool = load_script(os.path.join(repo, "docs", "_tools", "errors_table.py"))
    with open(tool.PAGE) as f:
        page = f.read()
    for call, keras_says, _ in tool.table_rows_in(page):
        name = call.split("**")[1]
        if keras_says.startswith("*(no error"):
            assert FIT_DOES.get(name), f"FIT_DOES lacks {name!r}"


def test_a_backup_directory_may_be_a_pathlib_path(tmp_path):
    loop = ManualLoop(build(), backup=tmp_path / "backup")
    assert isinstance(loop.backup, customfit.Backup)


@pytest.mark.parametrize("verbose", [True, False, np.int64(2)])
def test_verbose_takes_what_fit_takes(verbose, capsys):
    models = [build(), build()]
    models[0].fit(X, Y, epochs=1, verbose=verbose)
    keras_output = capsys.readouterr().out
    ManualLoop(models[1]).fit(X, Y, epochs=1, verbose=verbose)
    assert bool(capsys.readouterr().out) == bool(keras_output)


@pytest.mark.parametrize("shuffle", [1, 0, np.int64(1)])
def test_shuffle_takes_the_numbers_fit_reads_as_true_or_false(shuffle):
    model = build()
    ManualLoop(model).fit(X, Y, batch_size=8, shuffle=shuffle, verbose=0)
    assert model.optimizer.iterations.numpy() == 5
