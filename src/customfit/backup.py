"""Exact backup and resume of a ManualLoop run, and stops on signals.

A backup is one `tf.train.Checkpoint` of every model variable, optimizer and
metric, plus the data position, epoch, step and History, rotated by
`tf.train.CheckpointManager`. See docs/backup.md and docs/cluster.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from typing import Any

import keras
import tensorflow as tf

from customfit import data
from customfit import distribute
from customfit import errors

_NAME = "backup"
_FINISHED = "finished"


@dataclasses.dataclass(frozen=True)
class Backup:
    """Where and how often ManualLoop backs up a run, and when it stops.

    Args:
        directory: The folder for this run's backups (any `tf.io.gfile`
            path, such as `gs://bucket/run`). Under several workers, the
            chief writes here and worker i into `worker-i/`.
        every_steps: Also back up every this many training steps (at the
            end of a `steps_per_execution` chunk). None: only per epoch.
        every_epochs: Back up at the end of every this many epochs.
        keep: How many backups to keep (the newest).
        resume: Resume from the latest backup in `directory`, if any. False
            starts over and discards existing backups.
        delete_when_finished: Delete the backups when `fit` completes. False
            keeps them and marks the run finished. Either way the next `fit`
            in `directory` starts fresh.
        signals: The signals that stop `fit` after a completed step with a
            backup. SIGINT then raises `KeyboardInterrupt` (a second one
            interrupts at once); any other raises
            `customfit.errors.Preempted`, exit code 143.
        grace_period: Seconds between the signal and the scheduler's
            SIGKILL. 0: back up and stop at the next step. More: back up at
            once, train on, and back up and stop shortly before the period
            ends (TensorFlow's `TerminationConfig.grace_period`).

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
    signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
    grace_period: float = 0.0


@dataclasses.dataclass
class Start:
    """Where a run starts: a fresh epoch, or inside one (after a backup)."""

    epoch: int
    step: int = 0

    def continues_epoch(self, epoch: int) -> bool:
        """Whether `epoch` is resumed mid-way (its metrics are restored)."""
        return epoch == self.epoch and self.step > 0


class _RunState(tf.train.experimental.PythonState):
    """The loop's position and History, saved as JSON in the checkpoint."""

    def __init__(self, value: dict | None = None):
        self.value = value or {}

    def serialize(self) -> str:
        return json.dumps(self.value)

    def deserialize(self, string: str) -> None:
        self.value = json.loads(string)


class BackupCallback(keras.callbacks.Callback):
    """Writes backups as the loop runs; stops it after a signal.

    ManualLoop adds it after every other callback, so a backup taken at the
    end of an epoch holds that epoch's History entry. After `request_stop`,
    one process backs up and stops after the current step; several workers
    (or a grace period) leave the step to TensorFlow's preemption handler.

    Attributes:
        last: `(path, epoch, step)` of the newest backup, or None.
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
        self.last: tuple[str, int, int] | None = None
        self.stop_signal: int | None = None
        self._model = model
        self._batches = batches
        self._epoch = self._number = 0
        self._position = (0, 0)
        self._steps_since_backup = self._last_steps_done = 0
        self._directory = self._preemption = None
        if config is not None:
            self._directory = config.directory
            workers = distribute.num_workers(model.distribute_strategy)
            if workers > 1 and not distribute.is_chief():
                # Its own folder: it holds this worker's metric sums.
                worker = "{}-{}".format(*distribute.task())
                self._directory = os.path.join(config.directory, worker)
            if workers > 1 or config.grace_period:
                self._preemption = _preemption_handler(model, config, self)

    def restore(self, default_epoch: int) -> Start:
        """Restores the latest backup, if any; returns where to start."""
        if self.config is None:
            return Start(default_epoch)
        latest = tf.train.latest_checkpoint(self.config.directory)
        finished = os.path.join(self.config.directory, _FINISHED)
        if not self.config.resume or not latest or tf.io.gfile.exists(finished):
            _remove_backups(self._directory)
            return Start(default_epoch)
        state = _RunState()
        tf.train.Checkpoint(state=state).read(latest).expect_partial()
        state = state.value
        self._batches.resume(state, replay=not state["iterator_in_checkpoint"])
        # Optimizers built lazily in a custom train_step (a GAN's) get
        # their state when their variables are created, at the first step.
        self._checkpoint().read(latest).assert_existing_objects_matched()
        self._restore_local_metrics(os.path.basename(latest))
        history = self._model.history
        history.history, history.epoch = state["history"], state["epochs"]
        self._last_steps_done = state["step"]
        self._number = state["number"]
        self.last = (latest, state["epoch"], state["step"])
        return Start(state["epoch"], state["step"])

    def on_epoch_begin(self, epoch, logs=None):
        """Notes the epoch, for the backups written during it."""
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        """Backs up every `every_steps` steps; may stop after a signal."""
        done = self._batches.steps_done
        self._steps_since_backup += done - self._last_steps_done
        self._last_steps_done = done
        every = self.config and self.config.every_steps
        end_of_epoch = done >= (self._batches.num_batches or done + 1)
        if every and self._steps_since_backup >= every and not end_of_epoch:
            self.write(self._epoch, done)
        self._maybe_stop(self._epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        """Backs up every `every_epochs` epochs; may stop after a signal."""
        self._last_steps_done = 0
        if self.config and (epoch + 1) % self.config.every_epochs == 0:
            self.write(epoch + 1, 0)
        self._maybe_stop(epoch + 1, 0)

    def finish(self) -> None:
        """Ends a completed run: deletes its backups or marks it finished."""
        if self.config is None:
            return
        if self.config.delete_when_finished:
            _remove_backups(self._directory)
        else:
            finished = os.path.join(self._directory, _FINISHED)
            with tf.io.gfile.GFile(finished, "w") as f:
                f.write("")  # GFile creates the file on the first write

    def write(self, epoch: int, step: int) -> None:
        """Writes one backup of the run as of `epoch`, `step`."""
        if self.config is None:
            return
        self._number += 1
        history = self._model.history
        state = {
            **self._batches.position,
            "iterator_in_checkpoint": self._iterator_is_checkpointable(),
            "epoch": epoch,
            "step": step,
            "number": self._number,
            "history": history.history,
            "epochs": history.epoch,
            "local_metrics": [
                [part.numpy().tolist() for part in self._local_parts(v)]
                for v in self._model.metrics_variables
            ],
        }
        manager = tf.train.CheckpointManager(
            self._checkpoint(state),
            self._directory,
            max_to_keep=self.config.keep,
            checkpoint_name=_NAME,
        )
        path = manager.save(checkpoint_number=self._number)
        name = os.path.basename(path)
        self.last = (os.path.join(self.config.directory, name), epoch, step)
        self._steps_since_backup = 0

    def _checkpoint(self, state: dict | None = None) -> tf.train.Checkpoint:
        model = self._model
        objects = {
            "variables": list(model.variables),
            "metrics": list(model.metrics_variables),
            **{f"optimizer_{k}": v for k, v in _optimizers(model).items()},
        }
        if state is not None:
            objects["state"] = _RunState(state)
        if self._iterator_is_checkpointable():
            objects["iterator"] = self._batches.iterator
        return tf.train.Checkpoint(**objects)

    def _local_parts(self, variable) -> tuple:
        """The variable's values on this process's replicas."""
        strategy = self._model.distribute_strategy
        return strategy.experimental_local_results(variable.value)

    def _restore_local_metrics(self, name: str) -> None:
        """Gives each replica its own metric sums back, from its backup.

        A checkpoint holds a replicated metric's total over all replicas
        and restores it split evenly; the sums of the epoch would then add
        up in another order than in an uninterrupted run.
        """
        path = os.path.join(self._directory, name)
        if not tf.io.gfile.exists(path + ".index"):
            return  # this worker's backup is missing: keep the even split
        own = _RunState()
        tf.train.Checkpoint(state=own).read(path).expect_partial()
        variables = self._model.metrics_variables
        saved = own.value["local_metrics"]
        for variable, values in zip(variables, saved, strict=True):
            parts = self._local_parts(variable)
            for part, value in zip(parts, values, strict=True):
                part.assign(value)

    def _iterator_is_checkpointable(self) -> bool:
        # A tf.distribute iterator is not: its position is replayed instead.
        return isinstance(self._batches.iterator, tf.data.Iterator)

    # Stopping after a signal.

    def request_stop(self, signum: int) -> None:
        """Asks the loop to back up and stop after a step (signal handler)."""
        self.stop_signal = signum

    def _maybe_stop(self, epoch: int, step: int) -> None:
        self._position = (epoch, step)
        if self._preemption is not None:
            self._preemption.save_checkpoint_if_preempted()
        elif self.stop_signal is not None:  # one process: stop right here
            self.back_up_for_stop()
            self.stop()

    def back_up_for_stop(self) -> None:
        """Backs up the current step, unless that backup exists already."""
        if self.last is None or self.last[1:] != self._position:
            self.write(*self._position)

    def stop(self) -> None:
        """Ends `fit`: `KeyboardInterrupt` for Ctrl-C, else `Preempted`."""
        epoch, step = self._position
        name = signal.Signals(self.stop_signal or signal.SIGTERM).name
        where = f"; the backup {self.last[0]} resumes it" if self.last else ""
        text = f"fit stopped by {name} at epoch {epoch}, step {step}{where}"
        if self.stop_signal == signal.SIGINT:
            raise KeyboardInterrupt(text)
        print(f"customfit: {text}; exit code 143", file=sys.stderr, flush=True)
        raise errors.Preempted(errors.Preempted.EXIT_CODE)


_handlers: dict[Any, tuple] = {}


def _preemption_handler(
    model: keras.Model, config: Backup, callback: BackupCallback
) -> tf.distribute.experimental.PreemptionCheckpointHandler:
    """TensorFlow's preemption handler for the model's strategy.

    After a signal the workers agree on the step after which each backs up
    (`save_fn`) and stops (`exit_fn`). Its threads and cluster keys last as
    long as the process, so later fits reuse it with their own callback.
    Its own checkpoint only counts steps and is never written.
    """
    strategy = model.distribute_strategy
    key = (strategy, config.grace_period)  # the strategy stays alive
    if key not in _handlers:
        current = [callback]
        termination = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: current[0].stop_signal is not None,
            save_fn=lambda: current[0].back_up_for_stop(),
            exit_fn=lambda: current[0].stop(),
            grace_period=config.grace_period,
        )
        unused = os.path.join(config.directory, ".preemption-step-count")
        handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            getattr(strategy, "cluster_resolver", None),
            tf.train.CheckpointManager(tf.train.Checkpoint(), unused, 1),
            termination_config=termination,
        )
        _handlers[key] = (handler, current)
    handler, current = _handlers[key]
    current[0] = callback
    return handler


def _optimizers(model: keras.Model) -> dict[str, Any]:
    """The model's optimizers by attribute name (`optimizer` first)."""
    found = {} if model.optimizer is None else {"optimizer": model.optimizer}
    for name, value in sorted(vars(model).items()):
        if isinstance(value, keras.optimizers.Optimizer) and all(
            value is not other for other in found.values()
        ):
            found[name.lstrip("_")] = value
    return found


def _remove_backups(directory: str) -> None:
    """Deletes the backups (and half-written ones) and their index files."""
    for name in (f"{_NAME}-*", "checkpoint", _FINISHED):
        for path in tf.io.gfile.glob(os.path.join(directory, name)):
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
