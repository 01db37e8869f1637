"""The TensorRT backend under its earlier module path; it lives in :mod:`runtime.backends.tensorrt`."""
from .backends.tensorrt import *  # noqa: F401,F403
from .backends.tensorrt import __all__  # noqa: F401
