"""Multi-worker helpers: which worker is the chief, and where each one writes.

With `tf.distribute.MultiWorkerMirroredStrategy` every worker runs the same
program. TensorFlow's multi-worker guide prescribes that only the chief
writes checkpoints, backups and TensorBoard logs to the real location; the
other workers must still write (saving is a collective operation), but to a
temporary folder they then delete. `write_dir` gives each worker its folder.
"""

from __future__ import annotations

import json
import os
import tempfile

import tensorflow as tf


def task() -> tuple[str, int]:
    """This process's `(task_type, task_index)` from `TF_CONFIG`.

    Returns:
        `("worker", 0)`-style pair; `("chief", 0)` when `TF_CONFIG` is unset
        (a single process is its own chief).
    """
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    current = config.get("task") or {}
    return current.get("type", "chief"), int(current.get("index", 0))


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run's files.

    The chief is the task of type "chief", or worker 0 when the cluster has
    no chief -- TensorFlow's own convention.

    Args:
        strategy: Unused today; accepted so calls read naturally next to the
            strategy they concern.

    Returns:
        True on the chief (and in a single-process run).
    """
    del strategy
    task_type, task_index = task()
    if task_type == "chief":
        return True
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    has_chief = "chief" in config.get("cluster", {})
    return task_type == "worker" and task_index == 0 and not has_chief


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """How many worker processes (chief included) `strategy` spans.

    Args:
        strategy: Any `tf.distribute` strategy.

    Returns:
        1 for single-process strategies, else the cluster's chief and worker
        count.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec() if resolver is not None else None
    if not spec or not spec.jobs:
        return 1
    return sum(
        spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker")
    )


def write_dir(path: str) -> str:
    """The folder this worker writes `path`'s files to.

    The chief gets `path` itself. Every other worker gets a fresh temporary
    folder (under the system temp dir, named after its task) that nobody
    reads; delete it when done.

    Args:
        path: The folder the run's files belong in.

    Returns:
        `path` on the chief, a temporary folder elsewhere.

    Example:

    ```python
    import customfit.distribute

    log_dir = customfit.distribute.write_dir("logs/run1")
    ```
    """
    if is_chief():
        return path
    task_type, task_index = task()
    return tempfile.mkdtemp(prefix=f"customfit-{task_type}-{task_index}-")
