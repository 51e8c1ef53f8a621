# ruff: noqa: E501 (one full pytest test id per line)
"""The Keras tests that fail through ManualLoop, each with its reason.

One place, as data: test id (as pytest names it, relative to the extracted
keras sdist) -> (a regular expression its error must match, why it fails).
test_keras_suite.py fails on a failure not listed here, and on a listed test
that no longer fails that way (it passes now, or fails for another reason):
the list stays honest. Measured with Keras 3.15.1 and TensorFlow 2.21.
"""

_ORBAX = (
    "requires the 'orbax-checkpoint' package",
    "needs orbax-checkpoint, the OrbaxCheckpoint callback's own dependency",
)
_JAX = ("No module named 'jax'", "builds its data with jax.experimental.sparse")
_GRAIN = ("No module named 'grain'", "builds its data with grain")
_TORCH = ("No module named 'torch'", "builds its data with a torch DataLoader")

# Tests that need a package not installed here (not in customfit's dev
# dependencies). trainer_test.py imports jax at its top; plugin.py lets
# the file load without it, and only the tests that use jax fail.
NEEDS_PACKAGE = {
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_async_vs_sync_saving0": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_async_vs_sync_saving1": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_checkpoint_loading_comprehensive0": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_checkpoint_loading_comprehensive1": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_checkpoint_loading_via_saving_api": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_checkpoint_saving_basic0": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_checkpoint_saving_basic1": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_checkpoint_with_assets0": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_checkpoint_with_assets1": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_comprehensive_model_state_restoration0": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_comprehensive_model_state_restoration1": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_initial_value_threshold": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_invalid_save_freq": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_load_weights_from_orbax_checkpoint": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_max_to_keep": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_save_best_only0": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_save_best_only1": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_save_freq_epoch": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_training_resumption_1": _ORBAX,
    "keras/src/callbacks/orbax_checkpoint_test.py::OrbaxCheckpointTest::test_training_resumption_2": _ORBAX,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_evaluate_sparse_jax_eager": _JAX,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_evaluate_sparse_jax_graph": _JAX,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_fit_sparse_jax_eager": _JAX,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_fit_sparse_jax_graph": _JAX,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_predict_sparse_jax_eager": _JAX,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_predict_sparse_jax_graph": _JAX,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_fit_with_data_adapter_grain_dataloader": _GRAIN,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_fit_with_data_adapter_grain_dataset": _GRAIN,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_fit_with_data_adapter_grain_dataset_with_len": _GRAIN,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_fit_with_data_adapter_torch_dataloader_iterable": _TORCH,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_fit_with_data_adapter_torch_dataloader_iterable_with_len": _TORCH,
    "keras/src/trainers/trainer_test.py::TestTrainer::test_fit_with_data_adapter_torch_dataloader_tensor": _TORCH,
}

# Tests that depend on Keras internals a separate loop cannot set: none
# with Keras 3.15.1.
KERAS_INTERNALS = {}

EXPECTED = {**NEEDS_PACKAGE, **KERAS_INTERNALS}
