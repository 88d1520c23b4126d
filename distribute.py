"""Data-parallel training on the engines Keras and TensorFlow ship; no distribution code of our own.

--distribute none         one device, Keras' default placement.
--distribute mirrored     every device of this machine holds a replica of the model; each step's global batch
                          (--batch_size per replica x replicas) is split among them and the gradients averaged.
                          TensorFlow: tf.distribute.MirroredStrategy (all local GPUs, else the CPU);
                          JAX: keras.distribution.DataParallel over the local devices.
--distribute multiworker  the same over several processes or machines, each running the same train.py command.
                          TensorFlow: tf.distribute.MultiWorkerMirroredStrategy, the cluster read from TF_CONFIG.

Everything here must run before the backend's first operation (train.py calls `setup` through
cli.start_backend_quietly): TensorFlow configures collective operations only at program start.
"""
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple

import keras

import resume


class Distribution(NamedTuple):
    """How this process takes part in training."""

    scope: Callable  # () -> context manager under which the model is built, compiled and trained
    replicas: int  # model replicas over all processes; one step (and each process's batch) has batch_size * replicas
    worker: int  # this process's rank; 0 is the chief, which writes checkpoints, history and the sample
    description: str
    multiworker_tf: bool = False  # TensorFlow's MultiWorkerMirroredStrategy (see `prepare_fit`)


def single_device():
    return Distribution(contextlib.nullcontext, 1, 0, "one device")


def setup(mode):
    """The Distribution for --distribute `mode` on the current Keras backend; ValueError where this backend
    or the environment (TF_CONFIG) cannot provide it."""
    if mode == "none":
        return single_device()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow(mode)
    if backend == "jax" and mode == "mirrored":
        return _jax_local()
    supported = "KERAS_BACKEND=tensorflow" if mode == "multiworker" else "KERAS_BACKEND=tensorflow or jax"
    raise ValueError(f"not supported on the {backend} backend (Keras {mode} training needs {supported}); "
                     f"switch backends or use --distribute none")


def _tensorflow(mode):
    import tensorflow as tf

    if mode == "mirrored":
        strategy, worker = tf.distribute.MirroredStrategy(), 0
    else:
        worker = tf_worker_rank(os.environ.get("TF_CONFIG"))
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    replicas = strategy.num_replicas_in_sync
    # Every worker's pipeline makes the whole global batch; tf.distribute keeps this worker's share
    # (data sharding of a generator-fed dataset), so all workers see the same sequence of patches.
    return Distribution(strategy.scope, replicas, worker,
                        f"{type(strategy).__name__}, {replicas} replica{'s' * (replicas != 1)}",
                        multiworker_tf=mode == "multiworker")


def tf_worker_rank(tf_config):
    """This process's rank (0 = chief) from the TF_CONFIG JSON text; ValueError where it is missing or wrong.

    As tf.distribute: the task of type 'chief' is the chief; without one, worker 0 is.
    """
    if not tf_config:
        raise ValueError("multiworker needs the TF_CONFIG environment variable "
                         '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}}); see the README')
    try:
        config = json.loads(tf_config)
        cluster, task_type, index = config["cluster"], config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError):
        raise ValueError("TF_CONFIG is not JSON of the form {\"cluster\": {...}, \"task\": "
                         "{\"type\": ..., \"index\": ...}}") from None
    if task_type not in ("chief", "worker") or index >= len(cluster.get(task_type, [])):
        raise ValueError(f"TF_CONFIG task {task_type} {index} is not a chief or worker of its cluster")
    return index if task_type == "chief" else index + ("chief" in cluster)


def _jax_local():
    import jax

    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return Distribution(contextlib.nullcontext, len(devices), jax.process_index(),
                        f"keras.distribution.DataParallel, {len(devices)} {jax.default_backend()} "
                        f"device{'s' * (len(devices) != 1)}")


def prepare_fit(model, distribution, dataset):
    """Make model.fit work under MultiWorkerMirroredStrategy (`dataset`: the training PyDataset). Keras'
    TensorFlow trainer (keras-team/keras#20585) reduces its first batch eagerly to learn the input shapes and
    averages scalar logs along an axis they lack: build from the first batch here, and average over replicas."""
    if not distribution.multiworker_tf:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tensorflow_trainer

    with distribution.scope():
        model._symbolic_build(data_batch=dataset[0])
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    keras_reduce = tensorflow_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return keras_reduce(values, strategy, reduction)

    tensorflow_trainer.reduce_per_replica = reduce_per_replica


def finish(distribution):
    """After training: models built from now on are plain single-device models again."""
    if distribution.replicas > 1 and keras.backend.backend() == "jax":
        keras.distribution.set_distribution(None)


@contextlib.contextmanager
def output_folder(output_path, worker, resuming):
    """The output folder of this process: `output_path` for the chief (worker 0); for another worker a temporary
    folder (deleted at the end) holding a copy of the chief's backup where `resuming`, so that --resume restores
    the same epoch everywhere."""
    if worker == 0:
        yield output_path
        return
    folder = tempfile.mkdtemp(prefix=f"n2n-worker{worker}-")
    backup = Path(output_path) / resume.BACKUP_FOLDER
    if resuming and backup.is_dir():
        shutil.copytree(backup, Path(folder) / resume.BACKUP_FOLDER)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
