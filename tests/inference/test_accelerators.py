"""Accelerator set-up and the pool's process layout, on whatever host runs the tests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.services import ROOT
from workers.pool.accelerators import pool_environments


def test_one_pinned_process_per_device_each_with_its_metrics_port() -> None:
    envs = pool_environments("0, 1", 1, {"PATH": "/bin"}, metrics_port=9100)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1"]
    assert [e["OCEANSTREAM_METRICS_PORT"] for e in envs] == ["9100", "9101"]
    assert all(e["PATH"] == "/bin" for e in envs)
    unpinned = pool_environments(None, 3, {}, metrics_port=None)
    assert unpinned == [{}, {}, {}]
    with pytest.raises(ValueError, match="device ids"):
        pool_environments(" , ", 1, {}, None)


PROBE = """
import json, numpy as np, keras
from workers.pool.accelerators import prepare_accelerator
from core.bundles.bundle import build_default_bundle
reference = build_default_bundle(num_frames=8)
rng = np.random.default_rng(0)
inputs = (rng.standard_normal((4, 8, 512)).astype("float32"),
          rng.standard_normal((4, 8, 256)).astype("float32"), np.ones((4, 8), bool), None)
expected = reference.predict(*inputs)[0]
accelerator = prepare_accelerator({mode!r})
bundle = build_default_bundle(num_frames=8)
scores, attention = bundle.predict(*inputs)
print(json.dumps({{"policy": accelerator.policy, "devices": list(accelerator.devices),
    "same_version": bundle.metadata.version == reference.metadata.version,
    "max_diff": float(np.abs(scores.astype("float32") - expected).max()),
    "finite": bool(np.isfinite(scores).all() and np.isfinite(attention).all())}}))
"""


def probe(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(mode=mode)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_auto_keeps_float32_without_an_accelerator_and_mixed_precision_still_predicts() -> None:
    auto = probe("auto")
    if auto["devices"]:
        assert auto["policy"] in ("mixed_float16", "mixed_bfloat16")
    else:
        assert auto["policy"] == "float32" and auto["max_diff"] < 1e-6
    forced = probe("on")  # what an accelerator host runs, here on this host's device
    assert forced["policy"] == "mixed_float16" and forced["finite"]
    assert forced["same_version"]  # weights stay float32: the version does not change
    assert forced["max_diff"] < 2e-2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queues", "ingest,inference", "--batcher"], "serves the inference queue alone"),
        (["--queues", "faces", "--devices", "0"], "--devices applies"),
    ],
)
def test_worker_refuses_pool_options_for_other_queues(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "worker", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert message in done.stderr
