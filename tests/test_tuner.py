"""customfit.tuner: keras-tuner searches whose trials train through ManualLoop.

The heart is `test_fit_and_manual_drivers_give_the_same_search`: the same
search, run once with the `fit` driver and once with the `manual` driver,
from the same seeds and with op determinism on (tests/conftest.py), scores
every trial the same and picks the same best hyperparameters -- for
RandomSearch, BayesianOptimization, Hyperband and GridSearch, with built-in
and custom objectives and with loop hyperparameters. The other tests cover
keras-tuner's own behaviour around a trial: best models, failed trials,
resuming, and the example script.
"""

import dataclasses
import gc
import importlib
import re
import subprocess
import sys
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

import customfit
import customfit.tuner
from customfit import CustomModel
from customfit import ManualLoop
from tests.conftest import load_script

REPO = Path(__file__).resolve().parents[1]
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _arrays(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    return x, np.argmax(x[:, :3], axis=1).astype("int32")


X, Y = _arrays(64, seed=0)
X_VAL, Y_VAL = _arrays(32, seed=1)


@pytest.fixture(scope="module", autouse=True)
def _fast_garbage_collection():
    # keras-tuner runs gc.collect() twice per trial; with TensorFlow loaded
    # each takes about 0.5 s, half of a tiny trial. Freezing the objects
    # that exist now (modules, mostly) leaves them out of those passes; what
    # the trials create is collected as usual.
    gc.freeze()
    yield
    gc.unfreeze()


class Net(CustomModel):
    """A subclassed CustomModel, as in the tutorial."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.out = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.out(self.hidden(x))


class ErrorRateNet(Net):
    """A custom step: it also returns `error_rate`, one minus accuracy."""

    def train_step(self, data):
        logs = super().train_step(data)
        return {**logs, "error_rate": 1.0 - logs["accuracy"]}

    def test_step(self, data):
        logs = super().test_step(data)
        return {**logs, "error_rate": 1.0 - logs["accuracy"]}


class Classifier(customfit.tuner.HyperModel):
    """Tunes the width and learning rate; the batch size is a loop choice."""

    def __init__(self, model_class=Net, loop_choices=None, seed=1, **kwargs):
        # Seeded: op determinism refuses unseeded shuffles, and keras-tuner
        # clears the Keras session before every build.
        super().__init__(seed=seed, **kwargs)
        self.model_class = model_class
        if loop_choices is None:
            loop_choices = {"batch_size": [16, 32]}
        self.loop_choices = loop_choices  # {}: none (a dataset has batches)
        self.fits = 0

    def build(self, hp):
        model = self.model_class(hp.Choice("units", [4, 8]))
        # Create the weights now: keras-tuner reloads checkpoints into a
        # freshly built model (get_best_models, Hyperband).
        model(keras.Input((6,)))
        learning_rate = hp.Float("learning_rate", 1e-3, 1e-1, sampling="log")
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=LOSS,
            metrics=["accuracy"],
        )
        return model

    def fit_options(self, hp):
        return {
            name: hp.Choice(name, values)
            for name, values in self.loop_choices.items()
        }

    def fit(self, hp, model, *args, **kwargs):
        self.fits += 1
        return super().fit(hp, model, *args, **kwargs)


class RecordEpochs(keras.callbacks.Callback):
    """Appends each epoch begun to a list shared by its deep copies."""

    def __init__(self, epochs_begun):
        super().__init__()
        self.epochs_begun = epochs_begun

    def __deepcopy__(self, memo):
        return RecordEpochs(self.epochs_begun)  # keras-tuner copies per trial

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs_begun.append(epoch)


def _search(
    tuner_class,
    directory,
    *,
    driver,
    hypermodel_options=(),
    epochs=1,
    epochs_begun=None,
    **tuner,
):
    hypermodel = Classifier(driver=driver, **dict(hypermodel_options))
    tuner = tuner_class(
        hypermodel,
        seed=3,
        directory=str(directory),
        project_name="search",
        **tuner,
    )
    tuner.search(
        X,
        Y,
        epochs=epochs,
        validation_data=(X_VAL, Y_VAL),
        callbacks=[RecordEpochs([] if epochs_begun is None else epochs_begun)],
        verbose=0,
    )
    return tuner


def _trials(tuner):
    """What keras-tuner recorded of each trial, as plain data."""
    return {
        trial.trial_id: {
            "status": trial.status,
            "hyperparameters": trial.hyperparameters.values,
            "score": trial.score,
            "best_step": trial.best_step,
            "metrics": trial.metrics.get_config(),
        }
        for trial in tuner.oracle.trials.values()
    }


@dataclasses.dataclass(frozen=True)
class Search:
    tuner_class: type
    tuner_options: dict
    hypermodel_options: dict
    epochs: int | None
    epochs_begun: list  # the epochs the trials begin, in order
    distinct_scores: bool = True  # whether the trials score differently


SEARCHES = {
    "random-val_accuracy": Search(
        keras_tuner.RandomSearch,
        {"objective": "val_accuracy", "max_trials": 3},
        {},
        2,  # the trial's score is its best epoch's
        [0, 1] * 3,
    ),
    "bayesian-val_loss": Search(
        keras_tuner.BayesianOptimization,
        # Two random trials, then one the Gaussian process proposes.
        {"objective": "val_loss", "max_trials": 3, "num_initial_points": 2},
        {},
        1,
        [0] * 3,
    ),
    "hyperband-custom_objective": Search(
        keras_tuner.Hyperband,
        {
            "objective": keras_tuner.Objective("val_error_rate", "min"),
            "max_epochs": 2,
            "factor": 2,
        },
        {"model_class": ErrorRateNet},
        None,  # Hyperband sets `epochs` and `initial_epoch` per trial
        # Two trials of epoch 0; the better one reloaded and continued at
        # epoch 1 (initial_epoch=1); then two trials of epochs 0 and 1.
        [0, 0, 1, 0, 1, 0, 1],
    ),
    "grid-steps_per_execution": Search(
        keras_tuner.GridSearch,
        {"objective": "val_accuracy", "max_trials": 2},
        {"loop_choices": {"batch_size": [16], "steps_per_execution": [1, 3]}},
        1,
        [0] * 2,
        # The two trials differ in steps_per_execution only: how many steps
        # one call runs, not what they compute.
        distinct_scores=False,
    ),
}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Runs a search of SEARCHES with a driver, once per module."""
    done = {}

    def run(search_id, driver):
        if (search_id, driver) not in done:
            search = SEARCHES[search_id]
            if search.tuner_class is keras_tuner.BayesianOptimization:
                # Not in customfit[tuner]: keras-tuner[bayesian] brings them.
                pytest.importorskip("scipy")
                pytest.importorskip("sklearn")
            epochs_begun = []
            tuner = _search(
                search.tuner_class,
                tmp_path_factory.mktemp(f"{search_id}-{driver}"),
                driver=driver,
                hypermodel_options=search.hypermodel_options,
                epochs=search.epochs,
                epochs_begun=epochs_begun,
                **search.tuner_options,
            )
            done[search_id, driver] = tuner, epochs_begun
        return done[search_id, driver]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("search_id", SEARCHES)
def test_fit_and_manual_drivers_give_the_same_search(search_id, searched):
    # A fresh directory per search; the same seeds for the oracle and for
    # every build; op determinism on (conftest).
    fit_tuner, fit_epochs_begun = searched(search_id, "fit")
    manual_tuner, manual_epochs_begun = searched(search_id, "manual")

    fit_trials = _trials(fit_tuner)
    manual_trials = _trials(manual_tuner)
    assert all(t["status"] == "COMPLETED" for t in fit_trials.values())
    assert manual_trials == fit_trials  # scores and histories, exactly
    assert (
        manual_tuner.get_best_hyperparameters()[0].values
        == fit_tuner.get_best_hyperparameters()[0].values
    )
    # The tuner's callbacks saw the same epochs, Hyperband's included.
    expected = SEARCHES[search_id].epochs_begun
    assert manual_epochs_begun == fit_epochs_begun == expected
    # Hyperparameters of the model changed the scores: none was ignored.
    scores = {trial["score"] for trial in manual_trials.values()}
    assert (len(scores) > 1) == SEARCHES[search_id].distinct_scores


@pytest.mark.slow
def test_best_model_is_a_working_custom_model(searched):
    tuner, _ = searched("random-val_accuracy", "manual")

    model = tuner.get_best_models()[0]
    best_trial = tuner.oracle.get_best_trials()[0]

    assert isinstance(model, Net)
    # The weights of the trial's best epoch: it scores what the trial did.
    logs = ManualLoop(model).evaluate(X_VAL, Y_VAL, verbose=0, return_dict=True)
    assert logs["accuracy"] == best_trial.score
    assert model.predict(X_VAL, verbose=0).shape == (32, 3)
    history = ManualLoop(model).fit(X, Y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_loop_hyperparameters_reach_the_loop(tmp_path):
    seen = []

    class RecordLoop(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append((self.model.steps_per_execution, self.params["steps"]))

    def build(hp):
        model = Net(4)
        model.compile(optimizer="adam", loss=LOSS, metrics=["accuracy"])
        return model

    def fit_options(hp):
        return {
            "batch_size": hp.Choice("batch_size", [16, 64]),
            "steps_per_execution": hp.Fixed("steps_per_execution", 2),
        }

    tuner = keras_tuner.GridSearch(
        customfit.tuner.wrap(build, seed=0, fit_options=fit_options),
        objective="val_accuracy",
        directory=str(tmp_path),
    )
    tuner.search(
        X,
        Y,
        epochs=1,
        batch_size=8,  # fit_options replaces it
        validation_data=(X_VAL, Y_VAL),
        callbacks=[RecordLoop()],
        verbose=0,
    )

    # 64 examples: 4 batches of 16, then 1 batch of 64; 2 steps per call.
    assert seen == [(2, 4), (2, 1)]
    trials = tuner.oracle.trials.values()
    assert [t.status for t in trials] == ["COMPLETED", "COMPLETED"]


class Diverges(Net):
    def train_step(self, data):
        raise FloatingPointError("the loss diverged")


def test_a_trial_that_raises_is_reported_failed_and_the_search_goes_on(
    tmp_path,
):
    def build(hp):
        model_class = Diverges if hp.Boolean("diverges") else Net
        model = model_class(4)
        model.compile(optimizer="adam", loss=LOSS, metrics=["accuracy"])
        return model

    tuner = keras_tuner.GridSearch(
        customfit.tuner.wrap(build, driver="manual", seed=0),
        objective="val_accuracy",
        directory=str(tmp_path),
    )
    tuner.search(X, Y, epochs=1, validation_data=(X_VAL, Y_VAL), verbose=0)

    trials = {
        t.hyperparameters.values["diverges"]: t
        for t in tuner.oracle.trials.values()
    }
    assert trials[False].status == "COMPLETED"
    assert trials[True].status == "FAILED"
    assert "FloatingPointError: the loss diverged" in trials[True].message
    assert tuner.oracle.get_best_trials()[0] is trials[False]


def test_bad_input_fails_every_trial_until_keras_tuner_stops(tmp_path):
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)
    tuner = keras_tuner.RandomSearch(
        Classifier(driver="manual", loop_choices={}),
        objective="val_accuracy",
        max_trials=5,
        max_consecutive_failed_trials=2,
        directory=str(tmp_path),
    )

    # customfit's error at the door, inside keras-tuner's report.
    with pytest.raises(RuntimeError, match="consecutive failures") as error:
        tuner.search(dataset, validation_split=0.25, epochs=1, verbose=0)

    assert "`validation_split` cannot be given when `x` is a dataset" in str(
        error.value
    )
    assert "Fix: pass validation_data=" in str(error.value)
    statuses = [t.status for t in tuner.oracle.trials.values()]
    assert statuses == ["FAILED", "FAILED"]


@pytest.mark.slow
def test_an_interrupted_search_resumes_with_overwrite_false(tmp_path):
    class Interrupted(Classifier):
        def fit(self, hp, model, *args, **kwargs):
            if self.fits == 1:
                raise KeyboardInterrupt  # Ctrl-C during the second trial
            return super().fit(hp, model, *args, **kwargs)

    def tuner(hypermodel, max_trials):
        return keras_tuner.RandomSearch(
            hypermodel,
            objective="val_accuracy",
            max_trials=max_trials,
            seed=3,
            directory=str(tmp_path),
            project_name="resumable",
            overwrite=False,
        )

    first = tuner(Interrupted(driver="manual"), max_trials=2)
    with pytest.raises(KeyboardInterrupt):
        first.search(X, Y, epochs=1, validation_data=(X_VAL, Y_VAL), verbose=0)
    interrupted = first.oracle.trials["1"]
    assert interrupted.status == "RUNNING"

    hypermodel = Classifier(driver="manual")
    resumed = tuner(hypermodel, max_trials=3)
    resumed.search(X, Y, epochs=1, validation_data=(X_VAL, Y_VAL), verbose=0)

    # Trial 0 is kept, trial 1 is run again from the start, trial 2 is new.
    assert hypermodel.fits == 2
    trials = resumed.oracle.trials
    assert sorted(trials) == ["0", "1", "2"]
    assert all(t.status == "COMPLETED" for t in trials.values())
    assert trials["0"].score == first.oracle.trials["0"].score
    assert trials["1"].hyperparameters.values == (
        interrupted.hyperparameters.values
    )


def test_wrap_turns_a_build_function_into_a_hypermodel(tmp_path):
    def build(hp):
        inputs = keras.Input((6,))
        outputs = keras.layers.Dense(3)(inputs)
        model = CustomModel(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.SGD(hp.Choice("lr", [0.01, 0.1])),
            loss=LOSS,
            metrics=["accuracy"],
        )
        return model

    hypermodel = customfit.tuner.wrap(
        build,
        driver="manual",
        seed=1,  # keras-tuner reads seed=0 as "no seed"
        fit_options=lambda hp: {"batch_size": hp.Fixed("batch_size", 32)},
    )
    tuner = keras_tuner.GridSearch(
        hypermodel, objective="val_loss", directory=str(tmp_path)
    )
    tuner.search(X, Y, epochs=1, validation_data=(X_VAL, Y_VAL), verbose=0)

    assert isinstance(hypermodel, customfit.tuner.HyperModel)
    values = [t.hyperparameters.values for t in tuner.oracle.trials.values()]
    assert values == [
        {"lr": 0.01, "batch_size": 32},
        {"lr": 0.1, "batch_size": 32},
    ]
    best = tuner.get_best_models()[0]  # a functional CustomModel reloads
    assert isinstance(best, CustomModel)
    loss = ManualLoop(best).evaluate(X_VAL, Y_VAL, batch_size=32, verbose=0)
    assert loss[0] == tuner.oracle.get_best_trials()[0].score


def test_functional_custom_model_rebuilds_from_its_build_config():
    inputs = keras.Input((6,))
    model = CustomModel(inputs, keras.layers.Dense(3)(inputs))

    # What Hyperband does to the model of a trial that continues another.
    model.build_from_config(model.get_build_config())


def test_wrap_takes_a_keras_tuner_hypermodel_that_only_builds():
    class OnlyBuilds(keras_tuner.HyperModel):
        def build(self, hp):
            return keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])

    hypermodel = customfit.tuner.wrap(OnlyBuilds(), driver="fit")

    assert hypermodel.driver == "fit"
    hp = keras_tuner.HyperParameters()
    assert isinstance(hypermodel.build(hp), keras.Model)


def test_wrap_refuses_what_it_cannot_take_over():
    class TrainsItsOwnWay(keras_tuner.HyperModel):
        def fit(self, hp, model, *args, **kwargs):
            return 0.0

    with pytest.raises(customfit.InputTypeError, match="overrides fit"):
        customfit.tuner.wrap(TrainsItsOwnWay())
    with pytest.raises(customfit.InputTypeError, match="already a customfit"):
        customfit.tuner.wrap(Classifier())
    with pytest.raises(customfit.InputTypeError) as error:
        customfit.tuner.wrap(keras.Sequential())
    assert "Fix: pass the function itself: wrap(build_model)" in str(
        error.value
    )


def test_an_unknown_driver_is_refused_at_construction():
    with pytest.raises(customfit.InputValueError) as error:
        Classifier(driver="keras")

    assert str(error.value) == (
        "`driver` names what trains each trial.\n"
        'Expected: "manual" or "fit" or "eager".\n'
        "Received: driver='keras'.\n"
        'Fix: pass driver="manual" to train with ManualLoop, or '
        'driver="fit" to train with keras.Model.fit.'
    )


def test_a_backup_needs_a_manual_loop_driver(tmp_path):
    backup = customfit.Backup(str(tmp_path))
    with pytest.raises(customfit.InputValueError, match="needs a ManualLoop"):
        Classifier(driver="fit", backup=backup)
    with pytest.raises(customfit.InputValueError, match='pass driver="manual"'):
        customfit.tuner.wrap(lambda hp: None, driver="fit", backup=backup)


@pytest.mark.parametrize(
    "options, tuner_class, what, fix",
    [
        (
            {"callbacks": []},
            keras_tuner.RandomSearch,
            "Clashing.fit_options(hp) returned callbacks, which the tuner "
            "sets for every trial.",
            "Fix: pass callbacks to tuner.search(callbacks=[...]).",
        ),
        (
            {"epochs": 1, "batch_size": 8},
            keras_tuner.Hyperband,
            "Clashing.fit_options(hp) returned epochs, which Hyperband sets "
            "for every trial.",
            "Fix: leave the epochs to Hyperband: set "
            "Hyperband(max_epochs=...).",
        ),
    ],
    ids=["callbacks", "hyperband-epochs"],
)
def test_fit_options_may_not_set_what_the_tuner_sets(
    options, tuner_class, what, fix, tmp_path
):
    class Clashing(Classifier):
        def fit_options(self, hp):
            return dict(options)

    tuner_options = {"max_trials": 1}
    if tuner_class is keras_tuner.Hyperband:
        tuner_options = {"max_epochs": 2, "factor": 2}
    tuner = tuner_class(
        Clashing(driver="manual"),
        objective="val_accuracy",
        max_consecutive_failed_trials=1,
        directory=str(tmp_path),
        **tuner_options,
    )

    # The trial fails at the door; keras-tuner stops after one failure here.
    with pytest.raises(RuntimeError, match="consecutive failures") as error:
        tuner.search(X, Y, epochs=1, validation_data=(X_VAL, Y_VAL), verbose=0)
    assert what in str(error.value)
    assert fix in str(error.value)


def test_eager_driver_runs_the_step_uncompiled(tmp_path):
    traced = []

    class Eager(Net):
        def train_step(self, data):
            traced.append(tf.executing_eagerly())
            return super().train_step(data)

    tuner = keras_tuner.RandomSearch(
        Classifier(driver="eager", model_class=Eager),
        objective="val_accuracy",
        max_trials=1,
        directory=str(tmp_path),
    )
    tuner.search(X, Y, epochs=1, validation_data=(X_VAL, Y_VAL), verbose=0)

    assert traced and all(traced)  # one eager step per batch


def test_missing_keras_tuner_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_tuner", None)  # not installed
    monkeypatch.delitem(sys.modules, "customfit.tuner")

    with pytest.raises(ImportError) as error:
        importlib.import_module("customfit.tuner")

    assert str(error.value).startswith(
        "customfit.tuner needs keras-tuner, which is not installed.\n"
    )
    assert 'Fix: install the extra: pip install "customfit[tuner]".' in str(
        error.value
    )


@pytest.mark.slow
def test_example_tunes_mnist_with_the_manual_driver(
    tfds_data_dir, tmp_path, capsys
):
    example = load_script(REPO / "examples" / "tune_mnist.py")

    best = example.main(
        [
            "--limit",
            "128",
            "--max-trials",
            "2",
            "--epochs",
            "1",
            "--data-dir",
            tfds_data_dir,
            "--directory",
            str(tmp_path),
        ]
    )

    printed = capsys.readouterr().out
    assert "Results summary" in printed
    assert re.search(r"^Best: filters=(32|64), learning_rate=", printed, re.M)
    assert set(best.values) == {"filters", "learning_rate"}


TUNER_SCRIPT = r"""
import json, os, signal, sys
import numpy as np
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
import keras, keras_tuner
import customfit, customfit.tuner

directory, signal_at_step = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 6)).astype("float32")
y = np.argmax(x[:, :3], axis=1).astype("int32")


def build(hp):
    inputs = keras.Input((6,))
    units = hp.Choice("units", [4, 8])
    hidden = keras.layers.Dense(units, activation="relu")(inputs)
    model = customfit.CustomModel(inputs, keras.layers.Dense(3)(hidden))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class Probe(keras.callbacks.Callback):
    steps = 0

    def on_train_begin(self, logs=None):
        self.first = True

    def on_train_batch_begin(self, batch, logs=None):
        if self.first:
            print(f"FIRST epoch {self.epoch} batch {batch}", flush=True)
            self.first = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        Probe.steps += 1
        if Probe.steps == signal_at_step:
            os.kill(os.getpid(), signal.SIGTERM)  # stops after this step


backup = customfit.Backup(directory + "/backups", every_steps=2)
hypermodel = customfit.tuner.wrap(build, seed=0, backup=backup)
tuner = keras_tuner.RandomSearch(
    hypermodel,
    objective="val_accuracy",
    max_trials=2,
    seed=3,
    directory=directory,
    project_name="search",
    overwrite=False,
)
tuner.search(
    x, y, epochs=3, batch_size=16, validation_data=(x, y), callbacks=[Probe()],
    verbose=0,
)
trials = tuner.oracle.trials
print("SCORES", json.dumps({i: t.score for i, t in sorted(trials.items())}))
print("BEST", json.dumps(tuner.get_best_hyperparameters()[0].values))
"""


def run_search(tmp_path, directory, signal_at_step=0):
    script = tmp_path / "search.py"
    script.write_text(TUNER_SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(directory), str(signal_at_step)],
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_a_sigtermed_trial_resumes_mid_trial_when_the_search_restarts(
    tmp_path,
):
    # 3 epochs of 4 steps per trial; SIGTERM after step 6 of trial 0.
    stopped = run_search(tmp_path, tmp_path / "stopped", signal_at_step=6)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "SCORES" not in stopped.stdout
    resumed = run_search(tmp_path, tmp_path / "stopped")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first = re.search(r"FIRST epoch (\d+) batch (\d+)", resumed.stdout)
    assert (int(first[1]), int(first[2])) == (1, 2)  # where trial 0 stopped
    uninterrupted = run_search(tmp_path, tmp_path / "uninterrupted")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    for line in ("SCORES", "BEST"):
        expected = re.search(f"{line} (.*)", uninterrupted.stdout)[1]
        assert re.search(f"{line} (.*)", resumed.stdout)[1] == expected
