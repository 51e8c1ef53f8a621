"""ManualLoop drives Keras callbacks exactly as keras.Model.fit drives them.

Every test trains the same seeded model twice, once with `model.fit` and once
with `ManualLoop(model).fit` (every layer named, so files name the same
things), and compares what a user can observe:

- the hooks: a recording callback captures every hook call with its batch or
  epoch index, its logs and the optimizer step, and the two recordings are
  equal;
- the printed progress bar, with timings ("3ms/step", "0s") stripped;
- each built-in Keras callback's result: its files, stop epoch, learning
  rates, event-file scalars, plus the weights (bitwise) and History (exactly);
- BackupAndRestore after a real interruption and a second `fit`.

The last part tests `customfit.timing.StepTimer`, which only ManualLoop can
drive. Op determinism is on (tests/conftest.py).
"""

import dataclasses
import io
import json
import os
import re
import time
import zipfile
from collections.abc import Callable
from typing import Any

import h5py
import keras
import numpy as np
import pytest
import requests
import tensorflow as tf

from customfit import ManualLoop
from customfit import steps
from customfit.timing import StepTimer
from customfit.timing import TimingUnavailableError
from customfit.timing import maybe_timed
from tests.conftest import mirrored_strategy

SEED = 11
DRIVERS = ("fit", "manual")

_rng = np.random.default_rng(0)
X = _rng.normal(size=(40, 4)).astype("float32")
Y = (X @ _rng.normal(size=(4, 1)) + 0.3).astype("float32")
X_VAL = _rng.normal(size=(12, 4)).astype("float32")
Y_VAL = (X_VAL @ _rng.normal(size=(4, 1))).astype("float32")
VALIDATION = (X_VAL, Y_VAL)


def _dataset(x, y, batch_size=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def _unknown_size(dataset):
    """The same batches, but with a cardinality tf.data cannot know."""
    return dataset.filter(lambda x, y: True)


def _model(steps_per_execution=1, optimizer=None, run_eagerly=False):
    """A fresh two-layer regression model; same names and weights each time.

    Everything is named, so files and event logs name the same things under
    both drivers (cheaper than `keras.backend.clear_session()` per model).
    """
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input((4,), name="x"),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(1, name="out"),
        ],
        name="net",
    )
    optimizer = optimizer or (lambda: keras.optimizers.SGD(0.05))
    model.compile(
        optimizer=optimizer(),
        loss="mse",
        metrics=["mae"],
        steps_per_execution=steps_per_execution,
        run_eagerly=run_eagerly,
    )
    model.optimizer.name = "optimizer"
    return model


def _fit(driver, model, **options):
    """`model.fit(**options)` or `ManualLoop(model).fit(**options)`."""
    options = {"x": X, "y": Y, "batch_size": 8, "shuffle": False} | options
    if isinstance(options["x"], tf.data.Dataset):
        del options["y"], options["batch_size"]
    if driver == "fit":
        return model.fit(**options)
    return ManualLoop(model).fit(**options)


def _assert_same(manual, fit, where="result"):
    """Asserts equal nested results; arrays bitwise (NaN equals NaN)."""
    if isinstance(fit, dict):
        assert isinstance(manual, dict), where
        assert list(manual) == list(fit), where
        for key in fit:
            _assert_same(manual[key], fit[key], f"{where}[{key!r}]")
    elif isinstance(fit, (list, tuple)):
        assert len(manual) == len(fit), where
        for index, (a, b) in enumerate(zip(manual, fit, strict=True)):
            _assert_same(a, b, f"{where}[{index}]")
    elif isinstance(fit, (np.ndarray, np.generic, float, int)):
        np.testing.assert_array_equal(manual, fit, err_msg=where)
    else:
        assert manual == fit, where


# --- The hooks, in order ------------------------------------------------------

HOOKS = (
    "on_train_begin",
    "on_epoch_begin",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_test_end",
    "on_epoch_end",
    "on_train_end",
    "on_predict_begin",
    "on_predict_batch_begin",
    "on_predict_batch_end",
    "on_predict_end",
)


class Recorder(keras.callbacks.Callback):
    """Records each hook call as (hook, batch or epoch, logs, optimizer step).

    Optionally stops training from a batch hook (once the optimizer has run
    `stop_at_step` steps) or from an epoch hook (at the end of epoch
    `stop_at_epoch`), or stops each validation after its batch
    `stop_test_at_batch` (`model.stop_evaluating`).
    """

    def __init__(
        self, stop_at_step=None, stop_at_epoch=None, stop_test_at_batch=None
    ):
        super().__init__()
        self.events = []
        self.stop_at_step = stop_at_step
        self.stop_at_epoch = stop_at_epoch
        self.stop_test_at_batch = stop_test_at_batch

    def record(self, hook, index, logs):
        step = int(self.model.optimizer.iterations)
        self.events.append((hook, index, _plain(logs), step))
        if hook == "on_train_batch_end" and self.stop_at_step is not None:
            if step >= self.stop_at_step:
                self.model.stop_training = True
        if hook == "on_epoch_end" and index == self.stop_at_epoch:
            self.model.stop_training = True
        if hook == "on_test_batch_end" and index == self.stop_test_at_batch:
            self.model.stop_evaluating = True


def _recording(hook):
    """A hook method that records its call (batch and epoch hooks: index)."""
    if "batch" in hook or "epoch" in hook:

        def method(self, index, logs=None):
            self.record(hook, index, logs)

    else:

        def method(self, logs=None):
            self.record(hook, None, logs)

    method.__name__ = hook
    return method


for _hook in HOOKS:
    setattr(Recorder, _hook, _recording(_hook))


def _plain(logs):
    if logs is None:
        return None
    return {key: np.asarray(value).tolist() for key, value in logs.items()}


_TIMINGS = re.compile(r"\d+(\.\d+)?(s|ms|us)(/step)?|\d+:\d\d(:\d\d)?")


def _printed(text):
    """Printed output without timings, backspaces or trailing padding."""
    text = _TIMINGS.sub("<time>", text.replace("\b", ""))
    return re.sub(r" +(?=\r|\n|$)", "", text)


@pytest.fixture
def every_progbar_update(monkeypatch):
    """Progbar prints every update, not only those 0.05 s apart.

    Otherwise which intermediate steps appear depends on the machine's speed.
    """
    init = keras.utils.Progbar.__init__

    def init_without_interval(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.interval = 0.0

    monkeypatch.setattr(keras.utils.Progbar, "__init__", init_without_interval)


@dataclasses.dataclass
class Run:
    """One training configuration for the event-order tests."""

    name: str
    fit: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps_per_execution: int = 1
    stop_at_step: int | None = None
    stop_at_epoch: int | None = None
    stop_test_at_batch: int | None = None
    optimizer: Callable[[], keras.optimizers.Optimizer] | None = None

    def __str__(self):
        return self.name


RUNS = [
    Run("plain", {"epochs": 2, "verbose": 1}),
    Run(
        "validation",
        {"epochs": 3, "validation_data": VALIDATION, "verbose": 2},
    ),
    Run(
        "validation_freq_2",
        {
            "epochs": 4,
            "validation_data": VALIDATION,
            "validation_freq": 2,
            "verbose": 1,
        },
    ),
    Run(
        "validation_split",
        {"epochs": 2, "validation_split": 0.25, "verbose": "auto"},
    ),
    Run(
        "validation_steps_and_batch_size",
        {
            "epochs": 2,
            "validation_data": VALIDATION,
            "validation_steps": 2,
            "validation_batch_size": 4,
            "verbose": 2,
        },
    ),
    Run(
        "steps_per_epoch_on_repeated_dataset",
        {
            "x": _dataset(X, Y).repeat(),
            "epochs": 3,
            "steps_per_epoch": 3,
            "verbose": 1,
        },
    ),
    Run(
        "steps_per_epoch_beyond_the_arrays",
        {"epochs": 3, "steps_per_epoch": 2, "verbose": 1},
    ),
    Run(
        "steps_per_execution_3",
        {"epochs": 2, "validation_data": VALIDATION, "verbose": 1},
        steps_per_execution=3,
    ),
    Run(
        "steps_per_execution_with_steps_per_epoch",
        {
            "x": _dataset(X, Y).repeat(),
            "epochs": 2,
            "steps_per_epoch": 4,
            "verbose": 2,
        },
        steps_per_execution=3,
    ),
    Run(
        "unknown_size_dataset",
        {
            "x": _unknown_size(_dataset(X, Y)),
            "epochs": 2,
            "validation_data": _unknown_size(_dataset(X_VAL, Y_VAL)),
            "verbose": 1,
        },
    ),
    # The epoch's last chunk finds the data exhausted and runs no step:
    # optimizer.iterations must not move (fit takes even a chunk's first
    # batch through get_next_as_optional).
    Run(
        "unknown_size_dataset_steps_per_execution_2",
        {"x": _unknown_size(_dataset(X, Y)), "epochs": 2, "verbose": 1},
        steps_per_execution=2,
    ),
    Run("initial_epoch", {"epochs": 3, "initial_epoch": 1, "verbose": 1}),
    Run("no_epoch_to_run", {"epochs": 2, "initial_epoch": 2, "verbose": 1}),
    Run(
        "early_stop_from_batch_hook",
        {"epochs": 3, "validation_data": VALIDATION, "verbose": 1},
        stop_at_step=7,
    ),
    Run(
        "early_stop_from_batch_hook_steps_per_execution_2",
        {"epochs": 3, "validation_data": VALIDATION, "verbose": 2},
        steps_per_execution=2,
        stop_at_step=7,
    ),
    Run(
        "early_stop_from_epoch_hook",
        {"epochs": 4, "verbose": 1},
        stop_at_epoch=1,
    ),
    Run(
        "stop_evaluating_from_test_batch_hook",
        {"epochs": 2, "validation_data": VALIDATION, "verbose": 1},
        stop_test_at_batch=0,
    ),
    Run(
        # fit ends with optimizer.finalize_variable_values: EMA weights.
        "ema_weights_finalized_at_the_end",
        {"epochs": 2, "verbose": 1},
        optimizer=lambda: keras.optimizers.SGD(0.05, use_ema=True),
    ),
]


def _record(driver, run, capsys):
    model = _model(run.steps_per_execution, run.optimizer)
    recorder = Recorder(
        run.stop_at_step, run.stop_at_epoch, run.stop_test_at_batch
    )
    capsys.readouterr()
    history = _fit(driver, model, callbacks=[recorder], **run.fit)
    return {
        "events": recorder.events,
        "params": recorder.params,
        "history": history.history,
        "weights": model.get_weights(),
        "printed": _printed(capsys.readouterr().out),
    }


@pytest.mark.parametrize("run", RUNS, ids=str)
def test_hooks_logs_and_progress_bar_match_fit(
    run, capsys, every_progbar_update
):
    fit = _record("fit", run, capsys)
    manual = _record("manual", run, capsys)

    assert manual["events"] == fit["events"]
    assert manual["params"] == fit["params"]
    assert manual["history"] == fit["history"]
    _assert_same(manual["weights"], fit["weights"], "weights")
    assert manual["printed"] == fit["printed"]


def test_the_runs_reach_every_hook_and_print(capsys, every_progbar_update):
    # Guards the test above: its runs call each fit hook and print a bar.
    hooks, printed = set(), ""
    for run in RUNS:
        if str(run) not in ("validation", "validation_freq_2"):
            continue
        recorded = _record("manual", run, capsys)
        hooks |= {event[0] for event in recorded["events"]}
        printed += recorded["printed"]
    assert hooks == {name for name in HOOKS if "predict" not in name}
    assert "Epoch 4/4" in printed and "val_loss:" in printed
    assert "\r" in printed  # verbose=1 draws the bar in place


@pytest.mark.parametrize(
    "steps_per_execution, verbose", [(1, 1), (3, 2), (2, "auto")]
)
def test_evaluate_and_predict_hooks_and_progress_bar_match(
    steps_per_execution, verbose, capsys, every_progbar_update
):
    results = {}
    for driver in DRIVERS:
        model = _model(steps_per_execution)
        recorder = Recorder()
        runner = model if driver == "fit" else ManualLoop(model)
        capsys.readouterr()
        options = {"batch_size": 8, "verbose": verbose, "callbacks": [recorder]}
        evaluated = runner.evaluate(X, Y, **options)
        predicted = runner.predict(X, **options)
        printed = _printed(capsys.readouterr().out)
        results[driver] = (recorder.events, evaluated, predicted, printed)

    _assert_same(results["manual"], results["fit"])
    assert "5/5" in results["fit"][3]  # a bar was printed


# --- Every built-in callback --------------------------------------------------


def _files(directory):
    """Relative paths of the files under `directory`, sorted."""
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def _h5_arrays(source):
    """Every dataset in an .h5 file (a path or bytes), by its h5 path."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    arrays = {}
    with h5py.File(source, "r") as h5:

        def visit(name, item):
            if isinstance(item, h5py.Dataset):
                arrays[name] = item[()]

        h5.visititems(visit)
    return arrays


def _keras_archive(path):
    """The config and weights inside a .keras file (not its save date)."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        weights = _h5_arrays(archive.read("model.weights.h5"))
    return {"config": config, "weights": weights}


def _saved(directory):
    """What a checkpointing callback wrote: each file's content by name."""
    saved = {}
    for name in _files(directory):
        path = os.path.join(directory, name)
        if name.endswith(".keras"):
            saved[name] = _keras_archive(path)
        elif name.endswith((".h5", ".h5.bkp")):
            saved[name] = _h5_arrays(path)
        else:
            with open(path) as file:
                saved[name] = file.read()
    return saved


def _event_records(directory):
    """(run, step, tag, plugin, value) of every summary in the event files."""
    records = []
    for name in _files(directory):
        path = os.path.join(directory, name)
        for event in tf.compat.v1.train.summary_iterator(path):
            kind = event.WhichOneof("what")
            if kind != "summary":
                records.append((os.path.dirname(name), event.step, kind))
                continue
            for value in event.summary.value:
                records.append(
                    (
                        os.path.dirname(name),
                        event.step,
                        value.tag,
                        value.metadata.plugin_data.plugin_name,
                        tf.make_ndarray(value.tensor),
                    )
                )
    return records


class _Posts:
    """Stands in for `requests.post`: RemoteMonitor's posts, kept in order."""

    def __init__(self):
        self.sent = []

    def __call__(self, url, data=None, json=None, headers=None):
        self.sent.append((url, data, json))


@dataclasses.dataclass
class CallbackCase:
    """A built-in callback, its training run, and what to compare after it.

    `make(directory)` returns the callbacks for one run, writing into
    `directory`; `observe(directory, callbacks)` returns what the run left
    behind (files, attributes). Weights, History, the optimizer's step and
    learning rate, the printed output and RemoteMonitor's posts are compared
    for every case. `expect(result)` checks that the callback did act in
    the run (stopped, saved, changed the learning rate), so that equality
    is not vacuous.
    """

    name: str
    make: Callable[[str], list[keras.callbacks.Callback]]
    observe: Callable[[str, list], Any] = lambda directory, callbacks: None
    fit: dict[str, Any] = dataclasses.field(default_factory=dict)
    expect: Callable[[dict], bool] = lambda result: True
    steps_per_execution: int = 1
    optimizer: Callable[[], keras.optimizers.Optimizer] | None = None
    needs: str | None = None

    def __str__(self):
        return self.name


def _lambda_callback():
    """A LambdaCallback that keeps each call it gets in `.calls`."""
    calls = []
    callback = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: calls.append(("train_begin", logs)),
        on_epoch_begin=lambda epoch, logs: calls.append(("begin", epoch)),
        on_train_batch_end=lambda batch, logs: calls.append(
            ("batch", batch, logs)
        ),
        on_epoch_end=lambda epoch, logs: calls.append(("end", epoch, logs)),
        on_train_end=lambda logs: calls.append(("train_end", logs)),
    )
    callback.calls = calls
    return callback


Y_WITH_NAN = Y.copy()
Y_WITH_NAN[20] = np.nan  # in the third batch of 8

CALLBACK_CASES = [
    CallbackCase(
        "History",
        lambda d: [keras.callbacks.History()],
        lambda d, c: (c[0].history, c[0].params, c[0].epoch),
        {"epochs": 3, "validation_data": VALIDATION},
        lambda r: r["observed"][2] == [0, 1, 2],
    ),
    CallbackCase(
        "ProgbarLogger",
        lambda d: [keras.callbacks.ProgbarLogger()],
        fit={"epochs": 2, "validation_data": VALIDATION, "verbose": 1},
        expect=lambda r: "Epoch 2/2" in r["printed"],
        steps_per_execution=2,
    ),
    CallbackCase(
        "ModelCheckpoint_weights_only",
        lambda d: [
            keras.callbacks.ModelCheckpoint(
                os.path.join(d, "w-{epoch:02d}-{val_loss:.4f}.weights.h5"),
                save_weights_only=True,
            )
        ],
        lambda d, c: _saved(d),
        {"epochs": 3, "validation_data": VALIDATION},
        lambda r: len(r["observed"]) == 3,
    ),
    CallbackCase(
        "ModelCheckpoint_keras_save_best_only",
        lambda d: [
            keras.callbacks.ModelCheckpoint(
                os.path.join(d, "best-{epoch:02d}.keras"),
                monitor="val_loss",
                save_best_only=True,
            )
        ],
        lambda d, c: (_saved(d), c[0].best),
        {"epochs": 3, "validation_data": VALIDATION},
        # val_loss rises after the first epoch: the later ones are skipped.
        lambda r: list(r["observed"][0]) == ["best-01.keras"],
    ),
    CallbackCase(
        "ModelCheckpoint_save_freq_int",
        lambda d: [
            keras.callbacks.ModelCheckpoint(
                os.path.join(d, "w-{epoch:02d}-{batch:02d}.weights.h5"),
                save_weights_only=True,
                save_freq=3,
            )
        ],
        lambda d, c: _saved(d),
        {"epochs": 2},
        lambda r: len(r["observed"]) == 3,
        steps_per_execution=2,
    ),
    CallbackCase(
        "EarlyStopping_restore_best_weights",
        lambda d: [
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                min_delta=0.05,
                patience=2,
                restore_best_weights=True,
                verbose=1,
            )
        ],
        lambda d, c: (c[0].stopped_epoch, c[0].best_epoch, c[0].best),
        {"epochs": 12, "validation_data": VALIDATION},
        lambda r: r["observed"][:2] == (2, 0) and "Restoring" in r["printed"],
    ),
    CallbackCase(
        "ReduceLROnPlateau",
        lambda d: [
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=0.5,
                patience=1,
                min_delta=0.05,
                verbose=1,
            )
        ],
        lambda d, c: (c[0].wait, c[0].cooldown_counter, c[0].best),
        {"epochs": 4, "validation_data": VALIDATION},
        lambda r: len(set(r["history"]["learning_rate"])) == 3,
    ),
    CallbackCase(
        "LearningRateScheduler",
        lambda d: [
            keras.callbacks.LearningRateScheduler(
                lambda epoch, lr: lr * 0.5 if epoch else lr, verbose=1
            )
        ],
        fit={"epochs": 3},
        expect=lambda r: r["learning_rate"] == np.float32(0.0125),
    ),
    CallbackCase(
        "TerminateOnNaN",
        lambda d: [keras.callbacks.TerminateOnNaN()],
        fit={"epochs": 3, "y": Y_WITH_NAN},
        expect=lambda r: r["optimizer_step"] == 3,
    ),
    CallbackCase(
        "CSVLogger",
        lambda d: [keras.callbacks.CSVLogger(os.path.join(d, "log.csv"))],
        lambda d, c: _saved(d),
        {"epochs": 3, "validation_data": VALIDATION, "validation_freq": 2},
        lambda r: r["observed"]["log.csv"].count("\n") == 4,
    ),
    CallbackCase(
        "TensorBoard",
        lambda d: [
            keras.callbacks.TensorBoard(
                d, histogram_freq=1, update_freq=2, write_steps_per_second=False
            )
        ],
        lambda d, c: _event_records(d),
        {"epochs": 2, "validation_data": VALIDATION},
        lambda r: (
            {"epoch_loss", "batch_loss", "evaluation_loss_vs_iterations"}
            <= {record[2] for record in r["observed"]}
        ),
        needs="tensorboard",
    ),
    CallbackCase(
        "BackupAndRestore_save_freq_int",
        lambda d: [
            keras.callbacks.BackupAndRestore(
                d, save_freq=3, delete_checkpoint=False
            )
        ],
        lambda d, c: _saved(d),
        {"epochs": 2},
        lambda r: "training_metadata.json" in r["observed"],
        steps_per_execution=2,
    ),
    CallbackCase(
        "BackupAndRestore_per_epoch_deleted_at_end",
        lambda d: [keras.callbacks.BackupAndRestore(os.path.join(d, "b"))],
        lambda d, c: _files(d),
        {"epochs": 2},
        lambda r: r["observed"] == [],
    ),
    CallbackCase(
        "LambdaCallback",
        lambda d: [_lambda_callback()],
        lambda d, c: c[0].calls,
        {"epochs": 2, "validation_data": VALIDATION},
        lambda r: len(r["observed"]) == 16,
    ),
    CallbackCase(
        "SwapEMAWeights",
        lambda d: [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)],
        fit={"epochs": 3, "validation_data": VALIDATION},
        optimizer=lambda: keras.optimizers.SGD(0.05, use_ema=True),
    ),
    CallbackCase(
        "RemoteMonitor",
        lambda d: [keras.callbacks.RemoteMonitor(root="http://remote")],
        fit={"epochs": 2, "validation_data": VALIDATION},
        expect=lambda r: len(r["posts"]) == 2,
    ),
    CallbackCase(
        "all_of_them_together",
        lambda d: [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=3),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=1),
            keras.callbacks.ModelCheckpoint(
                os.path.join(d, "m-{epoch:02d}.weights.h5"),
                save_weights_only=True,
                save_freq=4,
            ),
            keras.callbacks.CSVLogger(os.path.join(d, "log.csv")),
            keras.callbacks.BackupAndRestore(
                os.path.join(d, "backup"), delete_checkpoint=False
            ),
            keras.callbacks.TerminateOnNaN(),
        ],
        lambda d, c: _saved(d),
        {"epochs": 4, "validation_data": VALIDATION, "verbose": 2},
        lambda r: (
            len(r["observed"]) == 7 and r["history"]["learning_rate"][-1] < 0.05
        ),
        steps_per_execution=2,
    ),
]


def _run_case(driver, case, directory, capsys, monkeypatch):
    os.makedirs(directory)
    posts = _Posts()
    monkeypatch.setattr(requests, "post", posts)
    model = _model(case.steps_per_execution, case.optimizer)
    made = case.make(directory)
    capsys.readouterr()
    options = {"verbose": 0} | case.fit
    history = _fit(driver, model, callbacks=made, **options)
    printed = _printed(capsys.readouterr().out)
    return {
        "observed": case.observe(directory, made),
        "history": history.history,
        "epochs": history.epoch,
        "weights": model.get_weights(),
        "optimizer_step": int(model.optimizer.iterations),
        "learning_rate": float(model.optimizer.learning_rate),
        "printed": printed,
        "posts": posts.sent,
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", CALLBACK_CASES, ids=str)
def test_builtin_callback_gives_fits_result(
    case, tmp_path, capsys, monkeypatch, every_progbar_update
):
    if case.needs:
        pytest.importorskip(case.needs)
    fit = _run_case("fit", case, str(tmp_path / "fit"), capsys, monkeypatch)
    manual = _run_case(
        "manual", case, str(tmp_path / "manual"), capsys, monkeypatch
    )

    _assert_same(manual, fit)
    assert case.expect(fit), f"{case.name} did not act in this run"


# --- BackupAndRestore after a real interruption -------------------------------


class _Interrupted(Exception):
    """Stands for a crash or a preemption in the middle of training."""


class _Interrupt(keras.callbacks.Callback):
    """Raises once training reaches epoch `epoch` (or optimizer step `step`)."""

    def __init__(self, epoch=None, step=None):
        super().__init__()
        self.epoch, self.step = epoch, step

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupted(f"interrupted at epoch {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            raise _Interrupted(f"interrupted at step {self.step}")


def _interrupted_then_resumed(driver, directory, save_freq, interrupt):
    options = {"epochs": 3, "validation_data": VALIDATION, "verbose": 0}
    model = _model(optimizer=lambda: keras.optimizers.Adam(0.01))
    backup = keras.callbacks.BackupAndRestore(directory, save_freq=save_freq)
    with pytest.raises(_Interrupted):
        _fit(driver, model, callbacks=[backup, interrupt], **options)

    model = _model(optimizer=lambda: keras.optimizers.Adam(0.01))
    backup = keras.callbacks.BackupAndRestore(directory, save_freq=save_freq)
    recorder = Recorder()
    history = _fit(driver, model, callbacks=[backup, recorder], **options)
    return {
        "weights": model.get_weights(),
        "optimizer": [v.numpy() for v in model.optimizer.variables],
        "history": history.history,
        "events": recorder.events,
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "save_freq, interrupt",
    [("epoch", {"epoch": 2}), (3, {"step": 13})],
    ids=["at_epoch_2", "mid_epoch_at_step_13"],
)
def test_backup_and_restore_resumes_as_fit_resumes(
    save_freq, interrupt, tmp_path
):
    results = {
        driver: _interrupted_then_resumed(
            driver, str(tmp_path / driver), save_freq, _Interrupt(**interrupt)
        )
        for driver in DRIVERS
    }
    _assert_same(results["manual"], results["fit"])
    first_epoch = results["manual"]["events"][1]
    assert first_epoch[0] == "on_epoch_begin" and first_epoch[1] > 0


@pytest.mark.slow
def test_resuming_at_an_epoch_boundary_matches_an_uninterrupted_run(tmp_path):
    resumed = _interrupted_then_resumed(
        "manual", str(tmp_path), "epoch", _Interrupt(epoch=2)
    )
    model = _model(optimizer=lambda: keras.optimizers.Adam(0.01))
    history = _fit(
        "manual", model, epochs=3, validation_data=VALIDATION, verbose=0
    )
    _assert_same(resumed["weights"], model.get_weights(), "weights")
    for name, values in history.history.items():
        assert resumed["history"][name] == values[2:], name


# --- StepTimer: data wait vs step time ----------------------------------------


def test_step_timer_puts_fetch_time_in_data_wait_and_step_time_in_step_s(
    monkeypatch,
):
    # A fake clock, one millisecond per reading; fetching a batch of the
    # slow input takes 50 ms more. The step is the real compiled step.
    clock = {"now": 0.0}

    def perf_counter():
        clock["now"] += 0.001
        return clock["now"]

    def batches(wait):
        for batch in _dataset(X, Y):  # 5 batches
            clock["now"] += wait
            yield batch

    monkeypatch.setattr(time, "perf_counter", perf_counter)
    for wait in (0.0, 0.05):
        model = _model(steps_per_execution=2)
        timer = StepTimer()
        timer.set_model(model)
        timed = maybe_timed(steps.make_train_function(model), [timer])
        iterator = batches(wait)
        timed(iterator), timed(iterator), timed(iterator)  # 2 + 2 + 1 steps
        with pytest.raises(StopIteration):
            timed(iterator)
        result = timer.result()
        assert result["data_wait_s"] == pytest.approx(5 * (wait + 0.001))
        assert result["step_s"] == pytest.approx(5 * 0.001)
        assert int(model.optimizer.iterations) == 5


@pytest.mark.parametrize(
    "steps_per_execution, run_eagerly",
    [(1, False), (3, False), (2, True)],
    ids=["compiled", "steps_per_execution_3", "eager"],
)
def test_step_timer_changes_nothing_but_adds_its_logs(
    steps_per_execution, run_eagerly
):
    options = {"epochs": 2, "validation_data": VALIDATION, "verbose": 0}
    model = _model(steps_per_execution, run_eagerly=run_eagerly)
    fit_recorder = Recorder()
    fit_history = _fit("fit", model, callbacks=[fit_recorder], **options)
    fit_weights = model.get_weights()

    model = _model(steps_per_execution, run_eagerly=run_eagerly)
    recorder, timer = Recorder(), StepTimer()
    history = _fit("manual", model, callbacks=[timer, recorder], **options)

    timing = history.history
    for name in ("data_wait_s", "step_s", "samples_per_s"):
        values = timing.pop(name)
        assert len(values) == 2 and all(value > 0 for value in values)
    assert timing == fit_history.history
    _assert_same(model.get_weights(), fit_weights, "weights")
    # Same hooks, same batch logs; only the epoch logs gain the timing.
    for event in recorder.events:
        if event[0] == "on_epoch_end":
            for name in ("data_wait_s", "step_s", "samples_per_s"):
                event[2].pop(name)
    assert recorder.events == fit_recorder.events
    # Every sample of an epoch is counted once.
    for epoch in timer.epoch_timings:
        busy = epoch["data_wait_s"] + epoch["step_s"]
        assert epoch["samples_per_s"] * busy == pytest.approx(len(X))


@pytest.mark.slow
def test_step_timer_counts_every_replicas_samples_under_mirrored_strategy():
    weights, timers = {}, {}
    for driver, callbacks in (("fit", []), ("manual", [StepTimer()])):
        with mirrored_strategy().scope():
            model = _model()
        _fit(driver, model, epochs=2, verbose=0, callbacks=callbacks)
        weights[driver], timers[driver] = model.get_weights(), callbacks

    _assert_same(weights["manual"], weights["fit"], "weights")
    assert len(timers["manual"][0].epoch_timings) == 2
    for epoch in timers["manual"][0].epoch_timings:
        busy = epoch["data_wait_s"] + epoch["step_s"]
        assert epoch["samples_per_s"] * busy == pytest.approx(len(X))


def test_step_timer_values_show_in_the_progress_bar(capsys):
    ManualLoop(_model()).fit(
        X, Y, batch_size=8, epochs=2, verbose=2, callbacks=[StepTimer()]
    )
    lines = capsys.readouterr().out.splitlines()
    epoch_lines = [line for line in lines if line.startswith("5/5")]
    assert len(epoch_lines) == 2
    for line in epoch_lines:
        assert " - data_wait_s: " in line
        assert " - step_s: " in line
        assert " - samples_per_s: " in line


def test_step_timer_under_keras_fit_says_to_use_manual_loop():
    model = _model()
    with pytest.raises(TimingUnavailableError) as raised:
        model.fit(X, Y, batch_size=8, verbose=0, callbacks=[StepTimer()])
    text = str(raised.value)
    assert text.startswith("StepTimer can time steps only when ManualLoop")
    assert "\nExpected: ManualLoop(model).fit(" in text
    assert "\nReceived: no step timed before batch 0" in text
    assert "\nFix: train with ManualLoop(model).fit(...)" in text


def test_without_step_timer_the_step_function_is_untouched():
    model = _model()
    train_function = steps.make_train_function(model)
    callbacks = keras.callbacks.CallbackList(
        [keras.callbacks.History()], model=model
    )
    assert maybe_timed(train_function, callbacks) is train_function
    assert maybe_timed(train_function, None) is train_function


def test_step_timer_relies_on_the_single_compiled_step():
    # StepTimer runs `StepFunction.compiled_step` on batches fetched in
    # Python; if steps.py renames or reshapes it, this fails plainly.
    model = _model()
    train_function = steps.make_train_function(model)
    batch = next(iter(_dataset(X, Y)))
    logs = train_function.compiled_step(batch)
    assert set(logs) == {"loss", "mae"}
    assert int(model.optimizer.iterations) == 1
