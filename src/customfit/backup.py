"""Exact backup and resume of a ManualLoop run, and clean stops on Ctrl-C.

`ManualLoop(model, backup=Backup("runs/1", every_steps=100))` writes a
backup every 100 steps and at the end of every epoch. A backup holds
everything the run needs to continue as if it had never stopped:

- every model variable (weights, batch-norm statistics, the state of each
  `keras.random.SeedGenerator`, so dropout draws the same masks);
- the state of every optimizer on the model (`model.optimizer` and any other
  `keras.optimizers.Optimizer` attribute, such as a GAN's two);
- the metric states, so a resumed epoch reports what an unbroken one would;
- the position in the data: the `tf.data` iterator's state, shuffle buffer
  and shuffle seeds included, so the next epochs draw the same reshuffles
  (a `tf.distribute` iterator cannot be checkpointed: its position is
  reached again by re-creating as many iterators and re-reading as many
  batches as the stopped run had, exact for a deterministic pipeline);
- the epoch, the step within it, and the History so far.

Calling `fit` again with the same `Backup` directory resumes from the latest
backup. Backups are written to a temporary folder and renamed into place;
`latest` names the newest complete one, replaced atomically, so a crash while
writing leaves the previous backup readable. The last `keep` are kept. When
`fit` finishes, the backups are deleted (`delete_when_finished=True`, the
default) so a new run with the same directory starts fresh; pass
`resume=False` to ignore existing backups and start over.

Exact resume needs the data to be reproducible: seed your shuffles
(`dataset.shuffle(n, seed=...)`) and build the same dataset again.

Ctrl-C (SIGINT) during `fit` does not cut a step in half: the loop finishes
the current step, writes a backup (when backups are on), calls
`on_train_end`, and raises `KeyboardInterrupt`. A second Ctrl-C interrupts at
once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import threading
from typing import Any

import keras
import tensorflow as tf

from customfit import data
from customfit import distribute

_LATEST = "latest"
_STATE = "state.json"


@dataclasses.dataclass(frozen=True)
class Backup:
    """Where and how often ManualLoop backs up a run.

    Args:
        directory: The folder for this run's backups (created if needed).
            Under several workers, only the chief writes here; the others
            write to temporary folders.
        every_steps: Also back up every this many training steps (at the
            end of a `steps_per_execution` chunk). None: only per epoch.
        every_epochs: Back up at the end of every this many epochs.
        keep: How many backups to keep (the newest).
        resume: Resume from the latest backup in `directory` if there is
            one. False starts over and discards existing backups.
        delete_when_finished: Delete the backups when `fit` completes, so
            the next run in `directory` starts fresh. False keeps them and
            marks the run finished (a new `fit` still starts fresh).

    Example:

    ```python
    import customfit

    backup = customfit.Backup("/tmp/customfit-run", every_steps=100)
    ```
    """

    directory: str
    every_steps: int | None = None
    every_epochs: int = 1
    keep: int = 2
    resume: bool = True
    delete_when_finished: bool = True


@dataclasses.dataclass
class Start:
    """Where a run starts: a fresh epoch, or inside one (after a backup)."""

    epoch: int
    step: int = 0

    def continues_epoch(self, epoch: int) -> bool:
        """Whether `epoch` is resumed mid-way (its metrics are restored)."""
        return epoch == self.epoch and self.step > 0


class BackupCallback(keras.callbacks.Callback):
    """Writes backups as the loop runs, and stops cleanly on Ctrl-C.

    ManualLoop adds it after every other callback, so a backup taken at the
    end of an epoch holds that epoch's History entry.
    """

    reads_batch_logs = False  # see customfit._fast_callbacks

    def __init__(
        self,
        config: Backup | None,
        model: keras.Model,
        batches: data.Batches,
    ):
        super().__init__()
        self.config = config
        self._model = model
        self._batches = batches
        self._epoch = 0
        self._steps_since_backup = 0
        self._last_steps_done = 0
        self._resumed = False
        self._interrupted = threading.Event()
        self._directory = None
        if config is not None:
            self._directory = config.directory
            if distribute.num_workers(model.distribute_strategy) > 1:
                self._directory = distribute.write_dir(config.directory)

    # Restoring.

    def restore(self, default_epoch: int) -> Start:
        """Restores the latest backup, if any; returns where to start."""
        if self.config is None:
            return Start(default_epoch)
        os.makedirs(self._directory, exist_ok=True)
        _remove_incomplete(self._directory)
        latest = _read_latest(self.config.directory)
        if not self.config.resume or latest in (None, "finished"):
            _remove_backups(self._directory)
            return Start(default_epoch)
        path = os.path.join(self.config.directory, latest)
        with open(os.path.join(path, _STATE)) as f:
            state = json.load(f)
        if state["iterator_in_checkpoint"]:
            self._batches.new_iterator()
        else:
            self._batches.replay(
                state["iterators_created"], state["steps_seen"]
            )
        checkpoint = self._checkpoint()
        # Optimizers built lazily in a custom train_step (a GAN's) get
        # their state when their variables are created, at the first step.
        checkpoint.read(
            os.path.join(path, "ckpt")
        ).assert_existing_objects_matched()
        self._batches.resume_at(
            state["step"], state["steps_seen"], state["num_batches"]
        )
        history = self._model.history
        history.history = state["history"]
        history.epoch = state["history_epochs"]
        self._resumed = state["step"] > 0
        return Start(state["epoch"], state["step"])

    # Writing.

    def on_epoch_begin(self, epoch, logs=None):
        """Notes the epoch, for the backups written during it."""
        self._epoch = epoch
        self._last_steps_done = self._batches.steps_done if self._resumed else 0
        self._resumed = False

    def on_train_batch_end(self, batch, logs=None):
        """Backs up every `every_steps` steps; stops here after a Ctrl-C."""
        every = self.config.every_steps if self.config else None
        if every:
            done = self._batches.steps_done
            self._steps_since_backup += done - self._last_steps_done
            self._last_steps_done = done
            end_of_epoch = done >= (self._batches.num_batches or done + 1)
            if self._steps_since_backup >= every and not end_of_epoch:
                self.write(self._epoch, done)
        self._maybe_stop_for_interrupt(self._epoch, self._batches.steps_done)

    def on_epoch_end(self, epoch, logs=None):
        """Backs up every `every_epochs` epochs; stops after a Ctrl-C."""
        if self.config and (epoch + 1) % self.config.every_epochs == 0:
            self.write(epoch + 1, 0)
        self._maybe_stop_for_interrupt(epoch + 1, 0)

    @contextlib.contextmanager
    def guarding(self, callbacks: keras.callbacks.CallbackList):
        """Runs the epochs: Ctrl-C stops after a step; errors end training.

        On any exception (a Ctrl-C included) the callbacks get
        `on_train_end`, so files are closed and logs flushed, and the
        exception propagates unchanged; backups stay for resuming. Keras'
        `BackupAndRestore` is the exception: it takes `on_train_end` to mean
        success and deletes its backup, so (as under fit, which calls no
        `on_train_end` after an error) it is not told. When the epochs
        complete, the run is marked finished.
        """
        with self.catching_interrupts():
            try:
                yield
            except BaseException:
                for callback in callbacks.callbacks:
                    if not isinstance(
                        callback, keras.callbacks.BackupAndRestore
                    ):
                        callback.on_train_end()
                raise
        self._finish()

    def _finish(self) -> None:
        if self.config is None:
            return
        if self.config.delete_when_finished:
            _remove_backups(self._directory)
        else:
            _write_latest(self._directory, "finished")

    def write(self, epoch: int, step: int) -> None:
        """Writes one backup of the run as of `epoch`, `step` (atomically)."""
        if self.config is None:
            return
        name = f"backup-e{epoch:05d}-s{step:07d}"
        temporary = os.path.join(self._directory, f".tmp-{name}")
        shutil.rmtree(temporary, ignore_errors=True)
        self._checkpoint().write(os.path.join(temporary, "ckpt"))
        history = self._model.history
        state = {
            **self._batches.position,
            "iterator_in_checkpoint": self._iterator_is_checkpointable(),
            "epoch": epoch,
            "step": step,
            "history": history.history if history else {},
            "history_epochs": history.epoch if history else [],
        }
        with open(os.path.join(temporary, _STATE), "w") as f:
            json.dump(state, f)
        _commit(temporary, os.path.join(self._directory, name))
        _write_latest(self._directory, name)
        _prune(self._directory, keep=self.config.keep)
        self._steps_since_backup = 0

    def _checkpoint(self) -> tf.train.Checkpoint:
        model = self._model
        optimizers = _optimizers(model)
        state = {
            "variables": list(model.variables),
            "metrics": list(model.metrics_variables),
            **{f"optimizer_{name}": opt for name, opt in optimizers.items()},
        }
        if self._iterator_is_checkpointable():
            state["iterator"] = self._batches.iterator
        return tf.train.Checkpoint(**state)

    def _iterator_is_checkpointable(self) -> bool:
        # A tf.distribute iterator is not: its position is replayed instead.
        return isinstance(self._batches.iterator, tf.data.Iterator)

    # Interrupts.

    @contextlib.contextmanager
    def catching_interrupts(self):
        """While active, Ctrl-C asks the loop to stop after the current step.

        A second Ctrl-C raises `KeyboardInterrupt` at once.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            if self._interrupted.is_set():
                raise KeyboardInterrupt
            self._interrupted.set()

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _maybe_stop_for_interrupt(self, epoch: int, step: int) -> None:
        if not self._interrupted.is_set():
            return
        already_written = self.config is not None and (
            _read_latest(self._directory) == f"backup-e{epoch:05d}-s{step:07d}"
        )
        if not already_written:
            self.write(epoch, step)
        raise KeyboardInterrupt(
            "fit stopped by Ctrl-C after a completed step"
            + (
                f"; resume from the backup in {self.config.directory!r}"
                if self.config
                else ""
            )
        )


def _optimizers(model: keras.Model) -> dict[str, Any]:
    """The model's optimizers by attribute name (`optimizer` first)."""
    found = {}
    if model.optimizer is not None:
        found["optimizer"] = model.optimizer
    for name, value in sorted(vars(model).items()):
        if isinstance(value, keras.optimizers.Optimizer) and all(
            value is not other for other in found.values()
        ):
            found[name.lstrip("_")] = value
    return found


def _read_latest(directory: str) -> str | None:
    try:
        with open(os.path.join(directory, _LATEST)) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def _write_latest(directory: str, name: str) -> None:
    temporary = os.path.join(directory, f".{_LATEST}.tmp")
    with open(temporary, "w") as f:
        f.write(name)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, os.path.join(directory, _LATEST))


def _commit(temporary: str, final: str) -> None:
    """Moves a completely written backup into place (one rename)."""
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)


def _backups(directory: str) -> list[str]:
    return sorted(
        name for name in os.listdir(directory) if name.startswith("backup-")
    )


def _prune(directory: str, keep: int) -> None:
    for name in _backups(directory)[: -max(keep, 1)]:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _remove_incomplete(directory: str) -> None:
    for name in os.listdir(directory):
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _remove_backups(directory: str) -> None:
    if not os.path.isdir(directory):
        return
    for name in _backups(directory):
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, _LATEST))
