"""Multi-worker helpers: the chief and where each worker writes."""

import json
import os

import tensorflow as tf

from customfit import distribute


def set_tf_config(monkeypatch, task_type, index, chief=False):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    if chief:
        cluster["chief"] = ["127.0.0.1:3"]
    config = {"cluster": cluster, "task": {"type": task_type, "index": index}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))


def test_single_process_is_its_own_chief(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.task() == ("chief", 0)
    assert distribute.is_chief()
    assert distribute.write_dir(str(tmp_path)) == str(tmp_path)
    assert distribute.num_workers(tf.distribute.get_strategy()) == 1


def test_worker_zero_is_chief_without_a_chief_task(monkeypatch, tmp_path):
    set_tf_config(monkeypatch, "worker", 0)
    assert distribute.is_chief()
    set_tf_config(monkeypatch, "worker", 1)
    assert not distribute.is_chief()
    other = distribute.write_dir(str(tmp_path))
    assert other != str(tmp_path) and os.path.isdir(other)
    assert "worker-1" in other
    os.rmdir(other)


def test_with_a_chief_task_no_worker_is_chief(monkeypatch):
    set_tf_config(monkeypatch, "worker", 0, chief=True)
    assert not distribute.is_chief()
    set_tf_config(monkeypatch, "chief", 0, chief=True)
    assert distribute.is_chief()
