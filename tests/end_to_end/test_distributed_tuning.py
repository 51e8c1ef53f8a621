"""A distributed keras-tuner search: one chief, two workers, ManualLoop trials.

keras-tuner's own chief/worker mode: every process runs the same script; the
one whose `KERASTUNER_TUNER_ID` is "chief" serves the oracle over gRPC at
`KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`, the others ("tuner0",
"tuner1") ask it for trials and run them, here through
`customfit.tuner.HyperModel(driver="manual")`. They share the tuner
directory, as keras-tuner requires. The test starts all three on 127.0.0.1
(a free port picked at run time), bounds each in time, and kills whichever
of them is still running when it ends, by pid.
"""

import importlib
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300  # for the whole search; a tiny one takes 20 to 50 s
WORKERS = ("tuner0", "tuner1")
MAX_TRIALS = 4

SEARCH_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import sys
    import time

    import keras
    import keras_tuner
    import numpy as np

    import customfit
    import customfit.tuner

    directory, max_trials = sys.argv[1], int(sys.argv[2])
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]


    class Classifier(customfit.tuner.HyperModel):
        def build(self, hp):
            inputs = keras.Input((6,))
            hidden = keras.layers.Dense(
                hp.Choice("units", [4, 8, 16]), activation="relu"
            )(inputs)
            model = customfit.CustomModel(inputs, keras.layers.Dense(3)(hidden))
            model.compile(
                optimizer=keras.optimizers.Adam(
                    hp.Choice("learning_rate", [0.001, 0.01, 0.1])
                ),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True
                ),
                metrics=["accuracy"],
            )
            return model


    class RecordingRandomSearch(keras_tuner.RandomSearch):
        # trial.json does not say which tuner ran a trial: note it here.
        def on_search_begin(self):
            super().on_search_begin()
            self.ran = []

        def on_trial_begin(self, trial):
            super().on_trial_begin(trial)
            self.ran.append(trial.trial_id)


    def wait_for_every_worker(workers):
        # Start searching together, so that no worker takes every trial
        # while the other one is still importing TensorFlow.
        open(os.path.join(directory, f"ready_{tuner_id}"), "w").close()
        deadline = time.monotonic() + 120
        while not all(
            os.path.exists(os.path.join(directory, f"ready_{worker}"))
            for worker in workers
        ):
            if time.monotonic() > deadline:
                sys.exit(f"{tuner_id}: the other workers never started")
            time.sleep(0.1)


    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = np.argmax(x[:, :3], axis=1)
    tuner = RecordingRandomSearch(
        Classifier(driver="manual", seed=0),
        objective="val_accuracy",
        max_trials=max_trials,
        seed=0,
        directory=directory,
        project_name="distributed",
    )
    if tuner_id != "chief":
        wait_for_every_worker(sys.argv[3:])
    tuner.search(
        x[:64],
        y[:64],
        epochs=1,
        validation_data=(x[64:], y[64:]),
        verbose=0,
    )

    if tuner_id == "chief":  # search() returned: every trial has ended
        tuner.results_summary(num_trials=1)
        best_trial = tuner.oracle.get_best_trials()[0]
        best_model = tuner.get_best_models()[0]  # a worker's checkpoint
        report = {
            "best_trial_id": best_trial.trial_id,
            "best_score": best_trial.score,
            "best_hyperparameters": best_trial.hyperparameters.values,
            "best_model": type(best_model).__name__,
            "best_model_accuracy": customfit.ManualLoop(best_model).evaluate(
                x[64:], y[64:], verbose=0, return_dict=True
            )["accuracy"],
        }
    else:
        report = {"ran": tuner.ran}
    with open(os.path.join(directory, f"report_{tuner_id}.json"), "w") as f:
        json.dump(report, f)
    """
)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(port):
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(
            [str(REPO / "src"), env.get("PYTHONPATH", "")]
        ),
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(port),
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="-1",
        # Three TensorFlow processes share a small machine: one thread each.
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
    )
    return env


def _wait(processes, deadline):
    """Waits until every process exits, one fails, or the deadline passes."""
    while time.monotonic() < deadline:
        codes = [process.poll() for process in processes.values()]
        if any(code not in (None, 0) for code in codes):
            return
        if all(code == 0 for code in codes):
            return
        time.sleep(0.2)


def _logs(logs_dir):
    return "\n".join(
        f"--- {path.name} ---\n{path.read_text()[-3000:]}"
        for path in sorted(logs_dir.glob("*.log"))
    )


@pytest.mark.slow
def test_a_chief_and_two_workers_split_a_manual_loop_search(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(SEARCH_SCRIPT)
    directory = tmp_path / "shared"  # the tuner directory all three share
    directory.mkdir()
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    env = _environment(_free_port())

    processes = {}
    try:
        for tuner_id in ("chief", *WORKERS):
            with open(logs_dir / f"{tuner_id}.log", "w") as log:
                processes[tuner_id] = subprocess.Popen(
                    [
                        sys.executable,
                        str(script),
                        str(directory),
                        str(MAX_TRIALS),
                        *WORKERS,
                    ],
                    env={**env, "KERASTUNER_TUNER_ID": tuner_id},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        _wait(processes, deadline=time.monotonic() + TIMEOUT_S)
        codes = {name: process.poll() for name, process in processes.items()}
    finally:
        for process in processes.values():  # only ours, by pid
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)

    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, _logs(logs_dir)

    # The trials were split across both workers, each run once.
    ran = {
        worker: json.loads((directory / f"report_{worker}.json").read_text())[
            "ran"
        ]
        for worker in WORKERS
    }
    assert all(ran.values()), ran
    assert sorted(ran["tuner0"] + ran["tuner1"]) == ["0", "1", "2", "3"]

    trials = {
        path.parent.name.removeprefix("trial_"): json.loads(path.read_text())
        for path in (directory / "distributed").glob("trial_*/trial.json")
    }
    assert sorted(trials) == ["0", "1", "2", "3"]
    assert {t["status"] for t in trials.values()} == {"COMPLETED"}

    # The chief reports the best trial, and reloads its model from the
    # checkpoint a worker wrote.
    chief = json.loads((directory / "report_chief.json").read_text())
    best_id = max(trials, key=lambda trial_id: trials[trial_id]["score"])
    assert chief["best_score"] == trials[best_id]["score"]
    assert chief["best_trial_id"] in [
        trial_id
        for trial_id, trial in trials.items()
        if trial["score"] == chief["best_score"]
    ]
    assert chief["best_model"] == "CustomModel"
    assert chief["best_model_accuracy"] == chief["best_score"]
    assert "Results summary" in (logs_dir / "chief.log").read_text()


def test_the_tuner_extra_brings_keras_tuner_and_grpcio():
    requirements = map(Requirement, importlib.metadata.requires("customfit"))
    extra = {
        requirement.name
        for requirement in requirements
        if requirement.marker
        and requirement.marker.evaluate({"extra": "tuner"})
    }
    assert extra >= {"keras-tuner", "grpcio"}

    # Installed, they import as keras-tuner's chief and workers import them.
    for name in ("keras-tuner", "grpcio"):
        assert importlib.metadata.version(name)
    importlib.import_module("grpc")
    importlib.import_module("keras_tuner.src.distribute.oracle_chief")
    importlib.import_module("keras_tuner.src.distribute.oracle_client")
