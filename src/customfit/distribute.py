"""Multi-worker helpers: which worker is the chief, and where each one writes.

Under `tf.distribute.MultiWorkerMirroredStrategy` only the chief writes to the
real location; the others must still write (saving is collective), to a
temporary folder (`write_dir`). The cluster comes from `TF_CONFIG`.
docs/distributed.md shows them at work.
"""

from __future__ import annotations

import tempfile

import tensorflow as tf

from customfit import _keras_compat


def task() -> tuple[str, int]:
    """`(task_type, task_index)` from `TF_CONFIG`; `("chief", 0)` without it."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return resolver.task_type or "chief", resolver.task_id or 0


def is_chief() -> bool:
    """Whether this process writes the run's files.

    True for the "chief" task, for worker 0 when the cluster has no chief
    (TensorFlow's convention), and in a single-process run.
    """
    task_type, task_index = task()
    if task_type == "worker" and task_index == 0:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return "chief" not in resolver.cluster_spec().jobs
    return task_type == "chief"


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """How many processes (chief and workers) `strategy` spans, at least 1."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec() if resolver is not None else None
    if not spec or not spec.jobs:
        return 1
    return sum(
        spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker")
    )


def set_lost_worker_timeout(seconds: float) -> None:
    """Sets how long workers wait for a silent one before they all stop.

    Without a heartbeat for this long (10 s by default) a worker is lost,
    and ManualLoop raises `customfit.errors.WorkerLostError` on the others.
    Call it on every worker before creating the strategy.

    Args:
        seconds: The heartbeat timeout; above any pause a worker may take.
    """
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    spec = resolver.cluster_spec()
    if spec.jobs:
        _keras_compat.configure_coordination_service(spec, seconds)


def write_dir(path: str) -> str:
    """The folder this worker writes `path`'s files to.

    Returns:
        `path` on the chief; elsewhere a fresh temporary folder, named after
        the task, that nobody reads (delete it when done).

    Example:

    ```python
    log_dir = customfit.distribute.write_dir("logs/run1")
    ```
    """
    if is_chief():
        return path
    task_type, task_index = task()
    return tempfile.mkdtemp(prefix=f"customfit-{task_type}-{task_index}-")
