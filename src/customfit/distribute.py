"""Multi-worker helpers: which worker is the chief, and where each one writes.

With `tf.distribute.MultiWorkerMirroredStrategy` every worker runs the same
program. TensorFlow's multi-worker guide prescribes that only the chief
writes checkpoints, backups and TensorBoard logs to the real location; the
other workers must still write (saving is a collective operation), but to a
temporary folder they then delete. `write_dir` gives each worker its folder.
The cluster comes from `TF_CONFIG`, read by TensorFlow's
`TFConfigClusterResolver`.
"""

from __future__ import annotations

import tempfile

import tensorflow as tf

from customfit import _keras_compat


def task() -> tuple[str, int]:
    """This process's `(task_type, task_index)` from `TF_CONFIG`.

    Returns:
        `("worker", 0)`-style pair; `("chief", 0)` when `TF_CONFIG` is unset
        (a single process is its own chief).
    """
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return resolver.task_type or "chief", resolver.task_id or 0


def is_chief() -> bool:
    """Whether this process writes the run's files.

    The chief is the task of type "chief", or worker 0 when the cluster has
    no chief -- TensorFlow's own convention.

    Returns:
        True on the chief (and in a single-process run).
    """
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    task_type, task_index = task()
    has_chief = "chief" in resolver.cluster_spec().jobs
    return task_type == "chief" or (
        task_type == "worker" and task_index == 0 and not has_chief
    )


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


def set_lost_worker_timeout(seconds: float) -> None:
    """Sets how long workers wait for a silent one before they all stop.

    TensorFlow's coordination service declares a worker lost after this
    long without a heartbeat (10 s by default) and aborts the others'
    steps; ManualLoop then raises `customfit.errors.WorkerLostError`. Call
    it on every worker before creating the `MultiWorkerMirroredStrategy`.

    Args:
        seconds: The heartbeat timeout; above any pause a worker may take.
    """
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.cluster_spec().jobs:
        _keras_compat.configure_coordination_service(
            resolver.cluster_spec(), seconds
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
