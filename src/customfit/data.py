"""User input to batches, yielded epoch by epoch as fit yields them.

`batches(...)` builds fit's own batches (through Keras' data adapters) from
anything fit accepts, distributed over the model's `tf.distribute` strategy.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import queue
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from customfit import _keras_compat
from customfit import checks


class _IteratorReaper:
    """Deletes the iterators a `Batches` is done with, off the training thread.

    Deleting a `tf.data` iterator waits for the pipeline's autotuning thread,
    which sleeps for up to seconds between rounds, so the end of an epoch
    could stall, in fit and in a plain `for` loop alike (docs/performance.md).
    One daemon thread deletes retired iterators instead, each once it holds
    the last reference (the loop may hold one a moment longer).
    """

    _LAST_REFERENCE_WAIT_S = 30.0
    _EXIT_JOIN_S = 10.0  # at exit: a deletion under way ends within ~2.5 s
    _STOP = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        # Re-entrant: a garbage collection while the thread starts may run a
        # Batches.__del__, which retires its iterator on this same thread.
        self._lock = threading.RLock()
        # A daemon thread still deleting an iterator (in TensorFlow's C++) at
        # exit aborts the process ("terminate called ..."): end it first.
        atexit.register(self.stop)

    def retire(self, iterator: Any) -> None:
        """Hands `iterator` over (after `stop`, the caller deletes it)."""
        if iterator is None or sys.is_finalizing():
            return
        with self._lock:
            if self._stopped:
                return
            self._queue.put(iterator)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run,
                    name="customfit-iterator-reaper",
                    daemon=True,
                )
                self._thread.start()

    def stop(self) -> None:
        """Deletes the pending iterators now and ends the thread (at exit)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(self._STOP)
            thread.join(self._EXIT_JOIN_S)

    def _run(self) -> None:
        pending: list[list[Any]] = []  # [iterator, deadline] pairs
        while True:
            try:  # wait for work when idle; otherwise poll every 10 ms
                iterator = self._queue.get(timeout=0.01 if pending else None)
            except queue.Empty:
                now = time.monotonic()
                # Deleted here once only the entry (and getrefcount's
                # argument) refers to it, or once its deadline has passed.
                pending = [
                    entry
                    for entry in pending
                    if sys.getrefcount(entry[0]) > 2 and now < entry[1]
                ]
                continue
            if iterator is self._STOP:
                return  # `pending` goes, deleting what only it holds
            deadline = time.monotonic() + self._LAST_REFERENCE_WAIT_S
            pending.append([iterator, deadline])
            del iterator


_reaper = _IteratorReaper()


class Batches:
    """The batches of one input, iterated one epoch at a time as fit does.

    Iterating gives `(first_step, last_step, iterator)` once per call of the
    step function, which takes up to `steps_per_execution` batches from
    `iterator`; `last_step` is the step fit reports to `on_*_batch_end` (the
    first one before Keras 3.11). With `steps_per_epoch` set, the iterator
    carries over from one epoch to the next (an infinite dataset keeps
    flowing); otherwise each epoch starts a fresh pass. Build one with
    `customfit.data.batches(...)`.

    Attributes:
        dataset: The (possibly distributed) dataset of batches.
        element_spec: The structure, shapes and dtypes of one global batch.
        steps_per_epoch: The steps the user asked for per epoch, or None.
        steps_per_execution: Batches per call of the step function.
        iterator: The iterator the current (or next) epoch reads, if any.
    """

    def __init__(
        self,
        adapter: Any,
        *,
        strategy: tf.distribute.Strategy,
        steps_per_epoch: int | None,
        steps_per_execution: int,
    ):
        self._adapter = adapter
        dataset = adapter.get_tf_dataset()
        self.element_spec = dataset.element_spec
        self.dataset = strategy.experimental_distribute_dataset(dataset)
        self.steps_per_epoch = steps_per_epoch
        self.steps_per_execution = steps_per_execution
        self._num_batches = adapter.num_batches
        self.iterator = None
        self._iterator_born = 0.0  # time.monotonic() at its creation
        self._steps_seen = 0  # batches taken from the current iterator
        self._resume_step = 0  # where the next epoch starts (after a backup)
        self.steps_done = 0
        self.iterators_created = 0

    def reset(self) -> None:
        """Forgets the position in the data: the next epoch starts afresh."""
        self._retire_iterator()
        self._steps_seen = 0
        self._num_batches = self._adapter.num_batches

    @property
    def num_batches(self) -> int | None:
        """Steps in one epoch, or None until a pass of unknown size ends."""
        return self.steps_per_epoch or self._num_batches

    def new_iterator(self) -> Any:
        """Retires the current iterator and returns a fresh one."""
        self._retire_iterator()
        self.iterator = iter(self.dataset)
        self._iterator_born = time.monotonic()
        self._steps_seen = 0
        self.iterators_created += 1
        return self.iterator

    # A younger iterator is deleted on the spot: handing over the iterators
    # of passes of a few tens of ms only churns memory. An older one can
    # stall as long as it has lived, so a pass of 0.3 s could take 0.6.
    _REAPER_MIN_AGE_S = 0.1

    def _retire_iterator(self) -> None:
        age = time.monotonic() - self._iterator_born
        if age >= self._REAPER_MIN_AGE_S:
            _reaper.retire(self.iterator)
        self.iterator = None

    def __del__(self) -> None:
        if getattr(self, "iterator", None) is not None:
            self._retire_iterator()

    def resume(self, position: dict[str, Any], *, replay: bool) -> None:
        """Makes the next epoch continue at a saved `position`.

        Without `replay` a fresh iterator gets its state, shuffle seeds
        included, from the backup. An iterator that cannot be checkpointed
        (a `tf.distribute` one) is replayed: as many iterators as the
        stopped run created (each draws the dataset's next shuffle seed),
        then the batches the last one gave. Exact for a deterministic
        pipeline.
        """
        if replay:
            while self.iterators_created < position["iterators_created"]:
                self.new_iterator()
            for _ in range(position["steps_seen"]):
                next(self.iterator)
        else:
            self.new_iterator()
        self._resume_step = position["step"]
        self._steps_seen = position["steps_seen"]
        self._num_batches = position["num_batches"] or self._num_batches

    @property
    def position(self) -> dict[str, int | None]:
        """What `resume` needs to continue from here."""
        return {
            "step": self.steps_done,
            "steps_seen": self._steps_seen,
            "num_batches": self._num_batches,
            "iterators_created": self.iterators_created,
        }

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        self._adapter.on_epoch_begin()
        first_step, self._resume_step = self._resume_step, 0
        resuming = first_step > 0 and self.iterator is not None
        if not resuming and (
            self.iterator is None or self.steps_per_epoch is None
        ):
            self.new_iterator()
        steps = self.num_batches
        if steps:
            yield from self._known_length_epoch(steps, first_step)
        else:
            yield from self._unknown_length_epoch(first_step)
        self._adapter.on_epoch_end()

    def _known_length_epoch(self, steps: int, first_step: int):
        spe = self.steps_per_execution
        for step in range(first_step, steps, spe):
            if self._num_batches and self._steps_seen >= self._num_batches:
                if self.steps_per_epoch:
                    _warn_out_of_data()
                break
            self._steps_seen += spe
            self.steps_done = min(step + spe, steps)
            yield step, _keras_compat.batch_end_step(step, spe), self.iterator
        if self._num_batches and self._steps_seen >= self._num_batches:
            # fit creates the next iterator here, at the end of the pass. A
            # dataset that reshuffles each iteration draws a new seed for
            # every iterator, so doing the same keeps the shuffles identical.
            self.new_iterator()

    def _unknown_length_epoch(self, first_step: int):
        spe = self.steps_per_execution
        for step in itertools.count(first_step, spe):
            self._steps_seen = self.steps_done = step + spe
            yield step, _keras_compat.batch_end_step(step, spe), self.iterator

    @contextlib.contextmanager
    def stop_when_exhausted(self):
        """Ends the epoch quietly when the step function runs out of data.

        The step functions of `customfit.steps` raise `StopIteration` when
        their iterator is empty. The first pass over data of unknown length
        learns the number of batches here.
        """
        try:
            yield
        except StopIteration:
            if self._num_batches is None:
                self._num_batches = self._steps_seen
            if self.steps_per_epoch:
                _warn_out_of_data()
            self._retire_iterator()
            self._adapter.on_epoch_end()


def batches(
    x: Any,
    y: Any = None,
    *,
    sample_weight: Any = None,
    batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    shuffle: bool | str = False,
    class_weight: dict[int, float] | None = None,
    steps_per_execution: int = 1,
    strategy: tf.distribute.Strategy | None = None,
    argument: str = "x",
) -> Batches:
    """Checks user input and returns its `Batches`, as fit would batch it.

    `x`, `y`, `sample_weight`, `batch_size`, `steps_per_epoch`, `shuffle`
    (False by default) and `class_weight` are `keras.Model.fit`'s arguments.
    `steps_per_execution` is the batches per call of the step function,
    `strategy` the `tf.distribute` strategy to distribute them over (the
    current one when None), and `argument` the name errors give `x`.

    Raises:
        InputValueError: If the input is empty, unbatched, infinite without
            `steps_per_epoch`, or inconsistent with `y`.
        InputTypeError: If `x` is of a type no data adapter accepts.
    """
    checks.check_input(
        x,
        y,
        sample_weight=sample_weight,
        steps_per_epoch=steps_per_epoch,
        argument=argument,
    )
    steps_per_epoch = debug_cap(
        steps_per_epoch, "max_steps_per_epoch", "steps_per_epoch"
    )
    adapter = _keras_compat.get_data_adapter(
        x=x,
        y=y,
        sample_weight=sample_weight,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        shuffle=False if isinstance(x, tf.data.Dataset) else shuffle,
        class_weight=class_weight,
    )
    return Batches(
        adapter,
        strategy=strategy or tf.distribute.get_strategy(),
        steps_per_epoch=steps_per_epoch,
        steps_per_execution=steps_per_execution,
    )


def debug_cap(value: int | None, setting: str, name: str) -> int | None:
    """The smaller of `value` and `keras.config.<setting>()`, as fit caps it.

    `keras.config.set_max_epochs(n)` and `set_max_steps_per_epoch(n)` shorten
    every run for a quick check; fit and ManualLoop warn that they do.
    """
    cap = _keras_compat.debug_cap(setting)
    if cap and (value is None or cap < value):
        warnings.warn(
            f"Training runs {name}={cap}: keras.config.set_{setting}({cap}) "
            "caps it.",
            stacklevel=3,
        )
        return cap
    return value


def _warn_out_of_data() -> None:
    warnings.warn(
        "The input ended before `steps_per_epoch * epochs` batches, so "
        "training stops here. Fix: `.repeat()` the dataset, or lower "
        "`steps_per_epoch`.",
        stacklevel=4,
    )
