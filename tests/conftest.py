"""Shared test set-up: quiet TensorFlow, op determinism on for every test."""

import os

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


@pytest.fixture
def tfds_data_dir():
    """The prepared tfds folder beside the repo (skips where it is absent)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(repo, "..", "shared", "data", "tfds", "mnist")
    if not os.path.isdir(path):
        pytest.skip(f"real MNIST for tfds not found at {path}")
    return os.path.dirname(path)
