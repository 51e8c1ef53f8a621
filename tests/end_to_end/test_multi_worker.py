"""Two real worker processes train one model with ManualLoop (MWMS).

The workers talk gRPC over free ports of 127.0.0.1, every process is bounded
in time and killed by the launcher if it overruns.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tests.conftest import load_script
from tests.conftest import mirrored_strategy

EXAMPLE = os.path.join(
    os.path.dirname(__file__), "..", "..", "examples", "multi_worker.py"
)


def outputs(done: subprocess.CompletedProcess) -> str:
    """Both streams' tails: stdout says how far each worker got."""
    return f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}"


def load_example():
    return load_script(EXAMPLE)


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("multi_worker")
    done = subprocess.run(
        [sys.executable, EXAMPLE, "--launch", "2", "--epochs", "2"]
        + ["--deterministic", "--try-keras-fit", "--timeout", "240"]
        + ["--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, outputs(done)
    results = []
    for index in range(2):
        weights = np.load(output / f"worker-{index}.npz")
        report = json.loads((output / f"worker-{index}.json").read_text())
        results.append(([weights[f"w{i}"] for i in range(4)], report))
    return results


@pytest.mark.slow
def test_both_workers_end_with_identical_weights(two_worker_run):
    (weights_0, report_0), (weights_1, report_1) = two_worker_run
    assert report_0["replicas"] == report_1["replicas"] == 2
    for a, b in zip(weights_0, weights_1, strict=True):
        np.testing.assert_array_equal(a, b)
    assert report_0["history"] == report_1["history"]
    assert report_0["history"]["loss"][-1] < report_0["history"]["loss"][0]


@pytest.mark.slow
def test_two_workers_match_one_process_with_two_replicas(two_worker_run):
    # Same global batches of 32, split over 2 replicas either way. Across
    # processes the all-reduce sums in another order, so this is allclose,
    # not bitwise (measured: differences of a few float32 ulps).
    example = load_example()
    strategy = mirrored_strategy()
    model, history = example.train(strategy, epochs=2, output=None, verbose=0)
    worker_weights, report = two_worker_run[0]
    for a, b in zip(model.get_weights(), worker_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        history.history["loss"], report["history"]["loss"], rtol=1e-5
    )


@pytest.mark.slow
def test_only_worker_zero_is_chief(two_worker_run):
    assert two_worker_run[0][1]["is_chief"] is True
    assert two_worker_run[1][1]["is_chief"] is False


@pytest.mark.slow
def test_keras_fit_fails_and_custom_model_fit_says_use_manual_loop(
    two_worker_run,
):
    report = two_worker_run[0][1]
    # keras-team/keras#20585. When Keras fixes it this fails: then let
    # CustomModel.fit run under several workers and update the docs.
    assert "PerReplica" in (report["keras_fit_error"] or "")
    assert "ManualLoop(model).fit" in report["custom_model_fit_error"]


@pytest.mark.slow
def test_two_workers_killed_mid_epoch_resume_exactly(tmp_path, two_worker_run):
    # Both workers SIGKILL themselves after 22 steps (epoch 2 of 2, step 6);
    # the chief's last backup is at epoch 2, step 4. Started again, the
    # cluster resumes from it and ends as the uninterrupted run did.
    output, backup_dir = tmp_path / "out", tmp_path / "backup"
    base = [sys.executable, EXAMPLE, "--launch", "2", "--epochs", "2"]
    base += ["--deterministic", "--timeout", "240", "--output", str(output)]
    base += ["--backup-dir", str(backup_dir)]
    killed = subprocess.run(
        [*base, "--kill-at-step", "22"], capture_output=True, timeout=300
    )
    assert killed.returncode != 0
    assert (backup_dir / "latest").read_text() == "backup-e00001-s0000004"
    resumed = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, outputs(resumed)
    for index in range(2):
        weights = np.load(output / f"worker-{index}.npz")
        report = json.loads((output / f"worker-{index}.json").read_text())
        expected_weights, expected_report = two_worker_run[index]
        for i, expected in enumerate(expected_weights):
            np.testing.assert_array_equal(weights[f"w{i}"], expected)
        assert report["history"] == expected_report["history"]
