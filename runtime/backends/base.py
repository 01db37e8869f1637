"""What every backend shares: the runner protocol and the errors a backend raises.

A runner maps a float32 batch (N, 1, H, W) to float32 logits (N, C, H, W); see
:mod:`runtime.stages`. Every error is a :class:`BackendUnavailable` whose message says
what to install or run.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runner(Protocol):
    """A model behind a backend: ``runner(x)`` with x float32 (N, 1, H, W) -> float32 logits
    (N, C, H, W); ``name`` says which backend/provider/precision runs it."""

    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class BackendUnavailable(RuntimeError):
    """The requested backend or provider is not installed or has no device here."""


class UnknownProvider(BackendUnavailable, ValueError):
    """A provider name that is not one of :data:`PROVIDERS`."""



class TensorRTUnavailable(BackendUnavailable):
    """TensorRT (``tensorrt`` or ``tensorrt_rtx``) cannot be imported here."""


class EngineIncompatible(BackendUnavailable):
    """No cached engine matches this GPU and TensorRT version (or the engine is stale)."""


class EngineBuildError(BackendUnavailable):
    """TensorRT failed to parse an ONNX model or to build an engine from it."""


class CudaError(BackendUnavailable):
    """A CUDA runtime call failed (no driver, no device, out of memory...)."""
