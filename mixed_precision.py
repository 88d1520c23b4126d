"""--mixed_precision: 16-bit compute where the hardware has it (bfloat16 on CPUs and recent GPUs, float16 with loss
scaling on older GPUs), and a warning where a CPU would emulate it. Shared by train.py, test_model.py and the
benchmarks; the networks keep float32 weights and a float32 output layer (model.py).
"""
import sys

import keras


def gpu_compute_capability():
    """(major, minor) CUDA compute capability of the first GPU the backend sees, or None without one."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        capability = getattr(device, "compute_capability", None) if device.platform == "gpu" else None
        return tuple(int(part) for part in capability.split(".")) if capability else None
    if backend == "torch":
        import torch

        return tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None
    return None


def cpu_emulates_bfloat16(cpuinfo="/proc/cpuinfo"):
    """True where a Linux x86 CPU has no AVX-512 (no avx512f flag): much of a bfloat16 training step is then
    emulated, several times slower than float32. False where the flags cannot be read (not Linux, not x86)."""
    try:
        with open(cpuinfo) as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), None)
    except OSError:
        return False
    return flags is not None and "avx512f" not in flags


def start_mixed_precision(work, cpuinfo="/proc/cpuinfo"):
    """--mixed_precision of train.py and test_model.py: use_mixed_precision, the policy printed, and a warning on
    stderr where a CPU without AVX-512 (no GPU) emulates bfloat16, so that `work` is slower than in float32."""
    print(f"mixed precision: {use_mixed_precision()}")
    if gpu_compute_capability() is None and cpu_emulates_bfloat16(cpuinfo):
        print(f"warning: --mixed_precision: this CPU has no AVX-512, so much of the bfloat16 arithmetic is emulated "
              f"and {work} is several times slower than without the flag (docs/speed.md)", file=sys.stderr)


def use_mixed_precision():
    """Make the models built from now on compute in 16 bits (variables stay float32); returns the policy name.

    bfloat16 on CPUs and on GPUs from compute capability 8.0 (Ampere) on; float16
    on older GPUs, where Keras' compile() then adds dynamic loss scaling.
    """
    capability = gpu_compute_capability()
    policy = "mixed_float16" if capability is not None and capability < (8, 0) else "mixed_bfloat16"
    keras.config.set_dtype_policy(policy)
    return policy
