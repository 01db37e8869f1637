"""A prebuilt TensorRT engine as a runner (device buffers through cuda-python, no torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..base import EngineIncompatible
from .platform import cuda_check, import_cudart, import_tensorrt, local_gpu, trt_flavor, trt_version


# ----------------------------------------------------------------------------- runner

class TrtRunner:
    """A deserialised TensorRT engine as a runner: float32 (N, C, H, W) -> float32 logits.

    One input and one output tensor; batches above the engine's profile maximum are run
    in chunks. Device buffers (sized for the profile's maximum batch) and a CUDA stream
    come from cuda-python's runtime API; inference is ``execute_async_v3`` on that stream.
    Not thread-safe (one execution context).

    Raises :class:`TensorRTUnavailable` (no TensorRT), :class:`BackendUnavailable` (no
    cuda-python or GPU), :class:`EngineIncompatible` (TensorRT cannot deserialise the
    plan: other GPU / TensorRT version, or corrupted), ``ValueError`` for an engine with
    more than one input or output, and on call for an input of the wrong shape.
    """

    def __init__(self, engine_path, trt=None, device: int = 0, label: Optional[str] = None):
        self.path = Path(engine_path)
        trt = trt or import_tensorrt()
        self._trt = trt
        cudart = import_cudart()
        self._cudart = cudart
        local_gpu(device)  # clear error when there is no GPU, before TensorRT logs its own
        cuda_check(cudart.cudaSetDevice(device), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        plan = self.path.read_bytes()
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineIncompatible(
                f"{self.path}: {trt_flavor(trt)} {trt_version(trt)} could not deserialise this engine (built for another "
                "GPU or TensorRT version, or corrupted; see the TensorRT log above); rebuild it with "
                "'python -m export trt' or run with --allow-build")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"{self.path}: expected 1 input and 1 output tensor, found inputs {ins}, outputs {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        _, _, mx = (tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
        self.max_batch = int(mx[0])
        self.input_chw = tuple(int(v) for v in mx[1:])
        self.context.set_input_shape(self.input_name, mx)
        out_max = tuple(int(v) for v in self.context.get_tensor_shape(self.output_name))
        self._in_bytes = int(np.prod(mx)) * self.input_dtype.itemsize
        self._out_bytes = int(np.prod(out_max)) * self.output_dtype.itemsize
        self._d_in = self._d_out = self._stream = None
        self._d_in = cuda_check(cudart.cudaMalloc(self._in_bytes), "cudaMalloc(input)")
        self._d_out = cuda_check(cudart.cudaMalloc(self._out_bytes), "cudaMalloc(output)")
        self._stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.context.set_tensor_address(self.input_name, int(self._d_in))
        self.context.set_tensor_address(self.output_name, int(self._d_out))
        self.providers = [label or f"{trt_flavor(trt)}-{trt_version(trt)}"]

    def _run(self, x: np.ndarray) -> np.ndarray:
        cudart, H2D, D2H = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, \
            self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        if not self.context.set_input_shape(self.input_name, x.shape):
            raise ValueError(f"{self.path}: TensorRT rejected input shape {x.shape}")
        out = np.empty(tuple(int(v) for v in self.context.get_tensor_shape(self.output_name)), self.output_dtype)
        cuda_check(cudart.cudaMemcpyAsync(self._d_in, x.ctypes.data, x.nbytes, H2D, self._stream), "cudaMemcpyAsync(H2D)")
        if not self.context.execute_async_v3(int(self._stream)):
            raise RuntimeError(f"{self.path}: execute_async_v3 failed (see the TensorRT log)")
        cuda_check(cudart.cudaMemcpyAsync(out.ctypes.data, self._d_out, out.nbytes, D2H, self._stream), "cudaMemcpyAsync(D2H)")
        cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_chw:
            raise ValueError(f"{self.path}: input shape {x.shape}, the engine takes (N, {', '.join(map(str, self.input_chw))})")
        parts = [self._run(np.ascontiguousarray(x[i:i + self.max_batch])) for i in range(0, len(x), self.max_batch)]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        """Free the device buffers and the stream (also done on garbage collection)."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for attr in ("_d_in", "_d_out"):
            ptr = getattr(self, attr, None)
            if ptr is not None:
                cudart.cudaFree(ptr)
                setattr(self, attr, None)
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
