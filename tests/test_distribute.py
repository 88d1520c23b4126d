"""Data-parallel training (train.py --distribute) on 2 virtual CPU devices, against one device on the same
global batch; the multi-worker strategy with two local processes."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, require_backend, run_main, run_script

import cli

cli.import_keras_quietly()
import distribute  # noqa: E402
import generator  # noqa: E402
import inference  # noqa: E402
import model as models  # noqa: E402
from noise_model import get_noise_model  # noqa: E402
from plot_history import load_history  # noqa: E402

PER_REPLICA_BATCH = 2
TINY = ["--nb_epochs", 1, "--steps", 1, "--image_size", 32, "--seed", 0, "--lr", 0.001, "--workers", 2]


@pytest.fixture(scope="module")
def initial_weights(tmp_path_factory):
    """One set of starting weights for every run, so that only the distribution differs."""
    path = tmp_path_factory.mktemp("init") / "init.weights.h5"
    models.get_model("srresnet").save_weights(str(path))
    return path


def train(tmp_path, name, image_folder, small_photos, initial_weights, *extra, devices=None, env=None):
    """train.py (on `devices` virtual CPU devices where given) with the tiny budget; its output folder."""
    output = tmp_path / name
    script = ["train.py"] if devices is None else ["tests/virtual_devices.py", devices, "train.py"]
    result = run_script(*script, "--image_dir", image_folder, "--test_dir", small_photos, *TINY,
                        "--output_path", output, "--weight", initial_weights, *extra, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return output, result.stdout


def single_device_psnr(checkpoint, small_photos):
    """Mean PSNR of `checkpoint` loaded into a plain one-device SRResNet, on train.py's validation data."""
    network = models.get_model("srresnet")
    models.load_weights(network, checkpoint)
    pairs = generator.load_validation_data(generator.load_images(sorted(small_photos.iterdir())),
                                           get_noise_model("gaussian,25,25"))
    return np.mean([float(models.psnr(clean, inference.predict_padded(network, noisy))) for noisy, clean in pairs])


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_mirrored_on_two_devices_trains_like_one_device_on_the_global_batch(backend, tmp_path, image_folder,
                                                                            small_photos, initial_weights):
    env = require_backend(backend)
    single, _ = train(tmp_path, "single", image_folder, small_photos, initial_weights,
                      "--batch_size", 2 * PER_REPLICA_BATCH, env=env)
    mirrored, log = train(tmp_path, "mirrored", image_folder, small_photos, initial_weights,
                          "--batch_size", PER_REPLICA_BATCH, "--distribute", "mirrored", devices=2, env=env)
    assert "2 replicas" in log or "2 cpu devices" in log, log
    assert f"{2 * PER_REPLICA_BATCH} patches a step ({PER_REPLICA_BATCH} per replica)" in log
    expected, got = load_history(single), load_history(mirrored)
    # The loss of the one step is computed before its update: equal up to float summation order. The
    # validation after the update is looser: Adam's first step moves every weight by about lr * sign(gradient),
    # so gradients near zero that differ in the last bits move their weights by +-lr either way.
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)
    for key in ("val_loss", "val_PSNR"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-3, err_msg=key)
    (checkpoint,) = mirrored.glob("weights.*.weights.h5")
    assert abs(single_device_psnr(checkpoint, small_photos) - got["val_PSNR"][-1]) < 0.01
    assert (mirrored / "sample.png").is_file()


def test_tf_config_ranks_the_chief_first():
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    ranks = [distribute.tf_worker_rank(json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))
             for kind, index in (("chief", 0), ("worker", 0), ("worker", 1))]
    assert ranks == [0, 1, 2]
    workers_only = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    assert distribute.tf_worker_rank(json.dumps(workers_only)) == 1
    for bad in (None, "{", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}})):
        with pytest.raises(ValueError, match="TF_CONFIG"):
            distribute.tf_worker_rank(bad)


def free_ports(count):
    """Ports that were free a moment ago on localhost."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_local_workers_finish_and_only_the_chief_writes(tmp_path, image_folder, small_photos, initial_weights):
    """MultiWorkerMirroredStrategy, two processes on localhost with TF_CONFIG, same command and --output_path."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    output = tmp_path / "run"
    command = [sys.executable, str(REPO / "train.py"), "--image_dir", image_folder, "--test_dir", small_photos,
               *TINY, "--batch_size", PER_REPLICA_BATCH, "--distribute", "multiworker", "--output_path", output,
               "--weight", initial_weights]
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "TF_CONFIG": config, "KERAS_BACKEND": "tensorflow", "MPLBACKEND": "Agg"}
        workers.append(subprocess.Popen([str(arg) for arg in command], env=env, cwd=tmp_path, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], logs
    assert "worker 0" in logs[0] and "worker 1" in logs[1]
    assert f"{2 * PER_REPLICA_BATCH} patches a step" in logs[0]
    (checkpoint,) = output.glob("weights.*.weights.h5")  # one checkpoint: the chief's
    assert len(load_history(output)["loss"]) == 1
    assert "best checkpoint" in logs[0] and "best checkpoint" not in logs[1]
    assert abs(single_device_psnr(checkpoint, small_photos) - load_history(output)["val_PSNR"][-1]) < 0.01


def test_multiworker_without_tf_config_says_what_to_set(tmp_path, image_folder, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = run_main("train", "--image_dir", image_folder, "--distribute", "multiworker",
                      "--output_path", tmp_path / "out")
    assert result.returncode == 2 and "--distribute multiworker: multiworker needs the TF_CONFIG" in result.stderr


def test_multiworker_on_jax_says_that_it_needs_tensorflow(tmp_path, image_folder):
    env = require_backend("jax")
    result = run_script("train.py", "--image_dir", image_folder, "--distribute", "multiworker",
                        "--output_path", tmp_path / "out", env=env)
    assert_one_line_error(result, "--distribute multiworker", "not supported on the jax backend",
                          "KERAS_BACKEND=tensorflow")


def test_mirrored_on_one_device_says_so(capsys):
    """--distribute mirrored where there is only one device (a CPU without virtual devices) trains as without it,
    and says so instead of nothing."""
    import argparse

    import train

    distribution = train.start_devices(argparse.Namespace(distribute="mirrored", batch_size=4))
    assert distribution.replicas == 1
    assert ("--distribute mirrored: MirroredStrategy, 1 replica, found one device: training as without --distribute"
            in capsys.readouterr().out)
