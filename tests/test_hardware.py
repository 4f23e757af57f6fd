"""Hardware fingerprint: stable part hashed, volatile part not, missing probes never crash."""

from __future__ import annotations

import re

import pytest

from tasks.instruments import hardware
from tasks.instruments.hardware import describe_devices, fingerprint, fingerprint_of, nvml_index

STABLE_KEYS = {"device_type", "cpu_model", "logical_cpus", "memory_gib", "machine", "os",
               "python", "torch", "torch_cuda"}
GPU_KEYS = {"gpu_name", "gpu_memory_bytes", "gpu_compute_capability", "gpu_driver"}


def test_fingerprint_shape_and_determinism() -> None:
    a, b = fingerprint("cpu"), fingerprint("cpu")
    assert re.fullmatch(r"[0-9a-f]{16}", a.fingerprint)
    assert a.fingerprint == b.fingerprint == fingerprint_of(a.stable)
    assert set(a.stable) == STABLE_KEYS
    assert {"load_avg", "cpu_mhz", "temperatures_c", "torch_threads", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS"} <= set(a.volatile)
    assert a.to_dict()["fingerprint"] == a.fingerprint


def test_volatile_state_is_not_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    before = fingerprint("cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    after = fingerprint("cpu")
    assert after.volatile["OMP_NUM_THREADS"] == "1"
    assert after.fingerprint == before.fingerprint


def test_fingerprint_of_is_canonical() -> None:
    assert fingerprint_of({"a": 1, "b": "x"}) == fingerprint_of({"b": "x", "a": 1})
    assert fingerprint_of({"a": 1}) != fingerprint_of({"a": 2})


def test_cuda_fingerprint_never_crashes() -> None:
    hw = fingerprint("cuda:0")  # no GPU on the development machine: GPU fields are None
    assert set(hw.stable) == STABLE_KEYS | GPU_KEYS
    assert hw.stable["device_type"] == "cuda"
    assert hw.fingerprint != fingerprint("cpu").fingerprint


def test_missing_probes_record_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(path: str) -> str:
        raise PermissionError(path)

    def no_torch() -> None:
        raise ImportError("no torch")

    monkeypatch.setattr(hardware, "_read", unreadable)
    monkeypatch.setattr(hardware, "_torch", no_torch)
    hw = fingerprint("cuda")
    assert hw.stable["memory_gib"] is None
    assert hw.stable["torch"] is None and hw.stable["gpu_name"] is None
    assert hw.volatile["cpu_mhz"] is None and hw.volatile["torch_threads"] is None
    devices = describe_devices()
    assert devices[1] == {"device": "cuda", "available": False,
                          "reason": "torch is not importable"}


def test_describe_devices() -> None:
    devices = describe_devices()
    assert devices[0]["device"] == "cpu" and devices[0]["available"] is True
    assert devices[0]["logical_cpus"] >= 1
    for dev in devices[1:]:
        assert dev["device"].startswith("cuda")
        assert dev["available"] or dev["reason"]  # absent CUDA always says why


def test_nvml_index_follows_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml_index(1) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert (nvml_index(0), nvml_index(1)) == (3, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    assert nvml_index(0) == 0  # UUID lists are not resolved: identity, with a warning
