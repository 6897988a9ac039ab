"""Accelerator set-up for an inference process: device memory, mixed precision, pinning.

One inference process serves one accelerator, chosen with `CUDA_VISIBLE_DEVICES` (the
`--devices` option of `oceanstream worker` starts one process per listed device). Memory
grows on demand instead of being taken whole at start, so processes (and other programs)
can share a host. On a machine without an accelerator all of this is a no-op.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger("oceanstream.worker")

#: Environment read by the frameworks when they first touch a device, so it is set before.
MEMORY_ENV = {
    # JAX preallocates 75% of the device by default.
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    # TensorFlow's equivalent of `set_memory_growth`, for code that runs before it.
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
}


def set_memory_environment() -> None:
    """Ask the frameworks to grow device memory on demand (call before any device use)."""
    for name, value in MEMORY_ENV.items():
        os.environ.setdefault(name, value)


@dataclass(frozen=True)
class Accelerator:
    """What this process runs on: the Keras backend, its accelerators, the dtype policy."""

    backend: str
    devices: tuple[str, ...]
    policy: str

    @property
    def present(self) -> bool:
        return bool(self.devices)


def prepare_accelerator(mixed_precision: str = "auto") -> Accelerator:
    """Grow device memory on demand and choose the dtype policy; before any model is built.

    `mixed_precision`: "auto" computes in float16 (bfloat16 on a TPU) where an accelerator is
    present and in float32 on CPU; "on" forces it; "off" keeps float32. Weights stay float32
    either way, so the bundle's version is the same.
    """
    import keras

    backend = keras.backend.backend()
    devices = _accelerators(backend)
    policy = "float32"
    if mixed_precision == "on" or (mixed_precision == "auto" and devices):
        on_tpu = any("tpu" in name.lower() for name in devices)
        policy = "mixed_bfloat16" if on_tpu else "mixed_float16"
    keras.mixed_precision.set_global_policy(policy)
    accelerator = Accelerator(backend, devices, policy)
    log.info(
        "backend %s, accelerators %s, dtype policy %s, CUDA_VISIBLE_DEVICES=%s",
        backend,
        list(devices) or "none",
        policy,
        os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"),
    )
    return accelerator


def _accelerators(backend: str) -> tuple[str, ...]:
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError as exc:  # the device was already initialised
                log.warning("cannot turn on memory growth for %s: %s", gpu.name, exc)
        return tuple(gpu.name for gpu in gpus)
    if backend == "jax":
        import jax

        return tuple(str(d) for d in jax.devices() if d.platform != "cpu")
    if backend == "torch":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return tuple(f"cuda:{i}" for i in range(count))
    return ()


def pool_environments(
    devices: str | None, processes: int, base: dict[str, str], metrics_port: int | None
) -> list[dict[str, str]]:
    """One environment per inference process: per device in `devices` ("0,1"), pinned with
    `CUDA_VISIBLE_DEVICES`, or else `processes` unpinned copies (a CPU host).

    With a metrics port set, process i gets `OCEANSTREAM_METRICS_PORT=<port + i>`.
    """
    if devices is None:
        pins: list[str | None] = [None] * processes
    else:
        pins = [d.strip() for d in devices.split(",") if d.strip()]
        if not pins:
            raise ValueError(f"--devices needs comma-separated device ids, got {devices!r}")
    environments = []
    for index, device in enumerate(pins):
        env = dict(base)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        if metrics_port:
            env["OCEANSTREAM_METRICS_PORT"] = str(metrics_port + index)
        environments.append(env)
    return environments
