"""Run one of the suite's scripts on N virtual CPU devices, as the data-parallel tests need:

    python3 tests/virtual_devices.py N train.py --distribute mirrored ...

TensorFlow: N logical CPU devices, configured before TensorFlow starts; JAX: XLA's forced host device
count. Then the script's main() runs as its __main__ guard would run it.
"""
import importlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def split_cpu(count):
    """Make the backend show `count` CPU devices; must run before its first operation."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "jax":
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}"
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def main():
    count, script, *argv = sys.argv[1:]
    import cli

    with cli.native_stderr_silenced():
        split_cpu(int(count))
    sys.argv = [script, *argv]
    return cli.run_main(importlib.import_module(Path(script).stem).main)


if __name__ == "__main__":
    sys.exit(main())
