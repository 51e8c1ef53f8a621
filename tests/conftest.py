"""Shared test set-up: quiet TensorFlow, op determinism and a seed per test."""

import glob
import importlib.util
import os
from pathlib import Path
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.experimental.enable_op_determinism()

# Two logical CPUs, so MirroredStrategy has two real replicas on this machine.
# This must happen before TensorFlow initializes its devices.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
REPLICA_DEVICES = ["/cpu:0", "/cpu:1"]

_MIRRORED = []

import keras  # noqa: E402  (after the devices are set)

KERAS_VERSION = tuple(int(part) for part in keras.__version__.split(".")[:2])


def requires_keras(minimum: tuple[int, int], reason: str):
    """Skips a test on a Keras older than `minimum`, saying why."""
    version = ".".join(map(str, minimum))
    return pytest.mark.skipif(
        KERAS_VERSION < minimum, reason=f"Keras < {version}: {reason}"
    )


def mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """The session's one MirroredStrategy over the two logical CPUs.

    Every MirroredStrategy numbers its all-reduce collectives from the same
    start, so two strategies in one process can hand the same collective
    key to ops of different shapes ("Shape mismatch in the collective
    instance"). Tests therefore share one strategy.
    """
    if not _MIRRORED:
        _MIRRORED.append(tf.distribute.MirroredStrategy(REPLICA_DEVICES))
    return _MIRRORED[0]


def load_script(path: str | os.PathLike) -> ModuleType:
    """Imports a script (an example, a docs tool) as a module, by its path."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _seeded():
    """Seeds every test, so none depends on the tests that ran before it.

    Under op determinism a random op with no seed set raises; a test that
    ran alone would fail where the whole suite passes.
    """
    import keras

    keras.utils.set_random_seed(1234)


@pytest.fixture
def tfds_data_dir():
    """The prepared tfds folder beside the repo (skips where it is absent)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(repo, "..", "shared", "data", "tfds", "mnist")
    prepared = glob.glob(os.path.join(path, "*", "dataset_info.json"))
    if not prepared:  # a folder tfds left half-downloaded is not enough
        pytest.skip(f"real MNIST prepared for tfds not found at {path}")
    return os.path.dirname(path)
