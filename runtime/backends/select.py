"""Model runners: ONNX Runtime (CPU, CUDA, TensorRT execution providers) and TensorRT engines.

A runner maps a float32 batch (N, 1, h, w) to float32 logits; see :mod:`runtime.stages`.
:func:`make_runners` builds the two runners of a cascade for a backend:

- ``onnxruntime`` with providers ``cpu`` / ``cuda`` / ``tensorrt`` (the latter two need
  ``onnxruntime-gpu``, which replaces ``onnxruntime``; the TensorRT provider keeps its
  engine cache inside the bundle's engine cache);
- ``tensorrt``: prebuilt engines from the bundle (``python -m export trt``), run by
  :class:`runtime.trt_backend.TrtRunner`; engines built for another GPU or TensorRT
  version are refused unless ``allow_build``;
- ``auto``: the fastest usable one (see :func:`choose_backend`), saying which and why.

Sources: ONNX Runtime execution providers and the TensorRT provider options
(onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html); ORT falls
back to the CPU silently when a provider cannot initialise, so usability is probed, not
assumed from ``get_available_providers()`` (which lists what the build contains).
"""
from __future__ import annotations

import base64
import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
BACKENDS = ("auto", "onnxruntime", "tensorrt")
GPU_ORT_HINT = ("install onnxruntime-gpu in place of onnxruntime with 'bash scripts/install-gpu.sh' (it uninstalls "
                "onnxruntime first; the two packages must never be installed together)")

# A one-node ONNX model (Relu, float32 [1, 4], opset 13, IR 7) used to probe whether an
# execution provider really initialises on this machine.
_PROBE_MODEL = base64.b64decode(
    "CAcSDW1hbW1vLWNhc2NhZGU6PwoMCgF4EgF5IgRSZWx1EgVwcm9iZVoTCgF4Eg4KDAgBEggKAggBCgIIBGITCgF5Eg4KDAgBEggKAggBCgIIBEIECgAQDQ==")


class BackendUnavailable(RuntimeError):
    """The requested backend or provider is not installed or has no device here."""


class UnknownProvider(BackendUnavailable, ValueError):
    """A provider name that is not one of :data:`PROVIDERS`."""


def available_providers() -> List[str]:
    """Execution providers compiled into the installed onnxruntime (not necessarily usable: see
    :func:`provider_status`)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def parse_providers(spec: Union[str, Sequence[str], None]) -> List[str]:
    """``"tensorrt,cuda"`` or a sequence -> short provider names, in order, without repeats.

    Accepts the short names of :data:`PROVIDERS` or ONNX Runtime's full names
    (``CUDAExecutionProvider``). Empty -> ``["cpu"]``. Raises ``ValueError`` naming the
    unknown provider and the valid ones.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    full_to_short = {v.lower(): k for k, v in PROVIDERS.items()}
    out = []
    for raw in items:
        p = str(raw).strip().lower()
        if not p:
            continue
        p = full_to_short.get(p, p)
        if p not in PROVIDERS:
            raise UnknownProvider(f"unknown execution provider {raw!r}; use {', '.join(PROVIDERS)}")
        if p not in out:
            out.append(p)
    return out or ["cpu"]


def session_options(threads: Optional[int] = None):
    """ONNX Runtime options: full graph optimisation, intra-op threads = physical cores by default.

    Idle intra-op threads do not spin (``session.intra_op.allow_spinning`` 0): the runtime
    always has other threads at work beside the models (read-ahead, writer, PNG encoders),
    and spinning took their cores. Measured on 2 cores, 8 DICOMs, 3 rounds: ``runtime infer``
    throughput 619-726 vs 671-783 ms per image with spinning, CPU time per image -10 %;
    sequential single-image latency unchanged within noise.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _preload_tensorrt() -> None:
    """Import the TensorRT Python package, if any, so that its libnvinfer is loaded before
    ONNX Runtime's TensorRT provider looks for it (the pip wheels keep it outside the
    library path)."""
    try:
        from .trt_backend import import_tensorrt

        import_tensorrt("tensorrt")
    except Exception:
        pass


class OrtRunner:
    """An ONNX Runtime session as a runner. ``providers``: names from :data:`PROVIDERS`, in priority order.

    ``trt_options``: TensorRT provider options (see :func:`runtime.trt_backend.ort_trt_options`);
    without them but with ``trt_cache_dir``, the engine cache is enabled there. With
    ``tensorrt`` requested and ``cuda`` usable but not listed, CUDA is added after it as
    the fallback for nodes TensorRT does not take (as ONNX Runtime recommends); the CPU
    provider always comes last.

    Raises :class:`BackendUnavailable` when a requested provider is not in this
    onnxruntime build (``pip install mammo-cascade[gpu]`` gives CUDA/TensorRT) or did not
    initialise (ONNX Runtime would otherwise fall back to the CPU silently).
    """

    def __init__(self, path, providers: Sequence[str] = ("cpu",), threads: Optional[int] = None,
                 trt_cache_dir: Optional[Path] = None, trt_options: Optional[dict] = None):
        import onnxruntime as ort

        have = ort.get_available_providers()
        short = parse_providers(providers)
        if "tensorrt" in short and "cuda" not in short and PROVIDERS["cuda"] in have:
            short.insert(short.index("tensorrt") + 1, "cuda")
        if "tensorrt" in short:
            _preload_tensorrt()
        chosen = []
        for p in short:
            full = PROVIDERS[p]
            if full not in have:
                raise BackendUnavailable(
                    f"execution provider {full} is not available in this onnxruntime build "
                    f"(available: {', '.join(have)}); {GPU_ORT_HINT}")
            if full == "TensorrtExecutionProvider" and (trt_options or trt_cache_dir is not None):
                opts = dict(trt_options or {"trt_engine_cache_enable": True,
                                            "trt_engine_cache_path": str(trt_cache_dir)})
                Path(str(opts.get("trt_engine_cache_path", "."))).mkdir(parents=True, exist_ok=True)
                chosen.append((full, opts))
            else:
                chosen.append(full)
        if "CPUExecutionProvider" not in [c if isinstance(c, str) else c[0] for c in chosen]:
            chosen.append("CPUExecutionProvider")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=chosen)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()
        requested = {PROVIDERS[p] for p in parse_providers(providers)}
        missing = [p for p in requested if p not in self.providers]
        if missing:
            raise BackendUnavailable(
                f"onnxruntime could not initialise {', '.join(missing)} for {self.path.name} (it would have fallen "
                f"back to {', '.join(self.providers)}): no usable NVIDIA GPU/driver, or missing CUDA/cuDNN/TensorRT "
                f"libraries; 'runtime info' shows what this machine can use")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, np.float32)})[0]


# ----------------------------------------------------------------------------- what is usable here

@functools.lru_cache(maxsize=None)
def provider_status(name: str) -> Tuple[bool, str]:
    """Whether ONNX Runtime can really use provider ``name`` (short or full) here, and why (not).

    Checks, in order: the provider is in this onnxruntime build; an NVIDIA GPU is visible
    (CUDA / TensorRT); a one-node probe session keeps the provider (ORT drops a provider
    that fails to initialise and falls back to the CPU with only a warning). Cached per
    process. Never raises.
    """
    import onnxruntime as ort

    from .trt_backend import cuda_gpus

    short = parse_providers([name])[0]
    full = PROVIDERS[short]
    have = ort.get_available_providers()
    if full not in have:
        return False, f"not in this onnxruntime {ort.__version__} build (the CPU package)"
    if short == "cpu":
        return True, "built in"
    gpus, why = cuda_gpus()
    if not gpus:
        return False, f"in the onnxruntime build but no NVIDIA GPU is usable ({why})"
    if short == "tensorrt":
        _preload_tensorrt()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(_PROBE_MODEL, sess_options=so, providers=[full, "CPUExecutionProvider"])
    except Exception as e:  # provider libraries present but broken
        return False, f"failed to initialise: {type(e).__name__}: {e}"
    if full not in sess.get_providers():
        return False, "in the onnxruntime build but failed to initialise (missing CUDA/cuDNN/TensorRT libraries?)"
    return True, f"initialised on {gpus[0].name} ({gpus[0].sm})"


@functools.lru_cache(maxsize=None)
def tensorrt_status() -> Tuple[bool, str, Optional[dict]]:
    """Whether prebuilt TensorRT engines can run here: ``(usable, reason, info)``.

    ``info`` (when usable): ``{"module", "version", "gpu", "compute_capability", "key"}``
    where ``key`` is this machine's engine-cache key. Needs TensorRT (``tensorrt`` or
    ``tensorrt_rtx``), cuda-python and a GPU. Never raises.
    """
    from .trt_backend import cuda_gpus, engine_key, import_cudart, import_tensorrt, trt_flavor, trt_version

    try:
        trt = import_tensorrt()
    except BackendUnavailable as e:
        return False, str(e).split(";")[0], None
    try:
        import_cudart()
    except BackendUnavailable as e:
        return False, f"{trt_flavor(trt)} {trt_version(trt)} is installed but {str(e).split(';')[0]}", None
    gpus, why = cuda_gpus()
    if not gpus:
        return False, f"{trt_flavor(trt)} {trt_version(trt)} is installed but no NVIDIA GPU is usable ({why})", None
    g = gpus[0]
    info = {"module": trt_flavor(trt), "version": trt_version(trt), "gpu": g.name,
            "compute_capability": g.compute_capability,
            "key": engine_key(g.compute_capability, trt_flavor(trt), trt_version(trt))}
    return True, f"{info['module']} {info['version']} on {g.name} ({g.sm})", info


def _engines_ready(bundle, key: str) -> Tuple[bool, str]:
    from .trt_backend import select_engine

    missing = []
    chosen = []
    for stage in bundle.stages:
        e, _ = select_engine(bundle, stage, key)
        if e is None:
            missing.append(stage)
        else:
            chosen.append(f"{stage} {e['precision']}")
    if missing:
        return False, f"no engine for {', '.join(missing)} built for this GPU and TensorRT ({key})"
    return True, f"engines for {key}: {', '.join(chosen)}"


def backend_report(bundle=None) -> List[dict]:
    """Every backend/provider combination, fastest first, with whether it is usable here and why.

    Each dict: ``name`` (``tensorrt``, ``onnxruntime-tensorrt``, ``onnxruntime-cuda``,
    ``onnxruntime-cpu``), ``backend``, ``providers`` (short names), ``usable`` (bool),
    ``detail`` (str), ``fix`` (how to make an unusable one usable, when known), and for
    ``tensorrt`` with a ``bundle``: ``engines_ready`` (bool:
    engines for this machine exist for both stages). The order is the assumed speed order:
    prebuilt TensorRT engines, ONNX Runtime's TensorRT provider (same kernels, more
    overhead, builds its engines on first use), CUDA provider, CPU.
    """
    out = []
    from .trt_backend import CUDA_PYTHON_HINT, INSTALL_HINT

    ok, why, info = tensorrt_status()
    row = {"name": "tensorrt", "backend": "tensorrt", "providers": [], "usable": ok, "detail": why}
    if ok and bundle is not None:
        row["engines_ready"], row["engines"] = _engines_ready(bundle, info["key"])
    if not ok:
        row["fix"] = (INSTALL_HINT if "TensorRT is" in why else CUDA_PYTHON_HINT if "cuda-python" in why
                      else "run on a machine with an NVIDIA GPU and its driver (nvidia-smi must list the GPU)")
    out.append(row)
    for name, provs in (("onnxruntime-tensorrt", ["tensorrt", "cuda"]), ("onnxruntime-cuda", ["cuda"]),
                        ("onnxruntime-cpu", ["cpu"])):
        ok, why = provider_status(provs[0])
        row = {"name": name, "backend": "onnxruntime", "providers": provs, "usable": ok, "detail": why}
        if not ok and why.startswith("not in this onnxruntime"):
            row["fix"] = GPU_ORT_HINT
        out.append(row)
    return out


def available_backends(bundle=None) -> List[dict]:
    """The usable rows of :func:`backend_report`, fastest first (``onnxruntime-cpu`` is always there).

    For benchmarks: iterate and call ``make_runners(bundle, row["backend"], row["providers"])``;
    a ``tensorrt`` row with ``engines_ready`` False needs ``allow_build=True``.
    """
    return [r for r in backend_report(bundle) if r["usable"]]


@dataclass
class BackendChoice:
    """What :func:`choose_backend` picked: ``backend``, ``providers`` and why (``reason``),
    including why each faster option was passed over (``skipped``)."""

    backend: str
    providers: List[str]
    reason: str
    skipped: List[str] = field(default_factory=list)

    def describe(self) -> str:
        what = self.backend if self.backend == "tensorrt" else f"onnxruntime [{', '.join(self.providers)}]"
        text = f"{what}: {self.reason}"
        if self.skipped:
            text += f" [faster, skipped: {'; '.join(self.skipped)}]"
        return text


def choose_backend(bundle, allow_build: bool = False) -> BackendChoice:
    """The fastest usable backend for ``bundle`` here (order of :func:`backend_report`).

    ``tensorrt`` is taken only when engines for this GPU and TensorRT version are present
    for both stages, or ``allow_build`` (they will be built into the cache).
    """
    skipped = []
    for row in backend_report(bundle):
        if not row["usable"]:
            skipped.append(f"{row['name']}: {row['detail']}")
            continue
        if row["name"] == "tensorrt":
            if row.get("engines_ready"):
                return BackendChoice("tensorrt", [], f"{row['detail']}; {row['engines']}", skipped)
            if allow_build:
                return BackendChoice("tensorrt", [], f"{row['detail']}; {row['engines']}: building them (--allow-build)",
                                     skipped)
            skipped.append(f"tensorrt: {row['engines']} (python -m export trt, or --allow-build)")
            continue
        return BackendChoice("onnxruntime", row["providers"], row["detail"], skipped)
    raise BackendUnavailable("no usable backend (not even onnxruntime's CPU provider): " + "; ".join(skipped))


# ----------------------------------------------------------------------------- factory

def _ort_trt_cache_dir(bundle) -> Path:
    """Where ONNX Runtime's TensorRT provider caches engines: ``<engine cache>/<key>/ort-trt-ep``,
    the key from the python ``tensorrt`` package's version when importable (ORT uses the
    libnvinfer that package loads), else ``<engine cache>/ort-trt-ep``."""
    from .trt_backend import build_dir

    ok, _, info = tensorrt_status()
    root = build_dir(bundle)
    return root / info["key"] / "ort-trt-ep" if ok and info["module"] == "tensorrt" else root / "ort-trt-ep"


def _trt_runner_for(bundle, stage: str, precision: Optional[str], allow_build: bool, max_batch: int):
    from . import trt_backend as tb
    from .bundle import BundleError, sha256_file

    trt = tb.import_tensorrt()
    gpu = tb.local_gpu()
    flavor, version = tb.trt_flavor(trt), tb.trt_version(trt)
    key = tb.engine_key(gpu.compute_capability, flavor, version)
    entry, rejected = tb.select_engine(bundle, stage, key, precision)
    if entry is not None:
        if entry.get("sha256") and sha256_file(entry["path"]) != entry["sha256"]:
            raise BundleError(f"{entry['path']}: sha256 does not match its record; the engine was altered or "
                              f"corrupted; {tb.rebuild_hint(bundle.root, entry['precision'])}")
        label = f"tensorrt:{entry['precision']}:{key}"
        return tb.TrtRunner(entry["path"], trt=trt, label=label)
    if not allow_build:
        raise tb.EngineIncompatible(tb.refusal_message(bundle, stage, precision, gpu, flavor, version, rejected))
    # --allow-build: build from the precision ONNX recorded by export (fp16 / int8 Q/DQ), or fp32 from the stage model.
    sources = (bundle.manifest.get("engine_sources") or {}).get(stage, {})
    wanted = [precision] if precision else [e.get("precision") for e, _ in rejected] + list(tb.PRECISION_PREFERENCE)
    for p in wanted:
        if p == "fp32" or p in sources:
            break
    else:
        raise tb.EngineIncompatible(
            f"cannot build a {precision} engine for {stage}: the bundle has no {precision} ONNX "
            f"({tb.source_relpath(stage, precision)}); make it with 'python -m export trt --bundle {bundle.root} "
            f"--precision {precision}' (add --onnx-only on a machine without a GPU)")
    info = bundle.stages[stage]
    if p == "fp32":
        src, src_rel, src_sha = info.path, info.path.name, info.sha256
    else:
        src_rel, src_sha = sources[p]["file"], sources[p]["sha256"]
        src = Path(bundle.root) / src_rel
        if not src.is_file() or sha256_file(src) != src_sha:
            raise BundleError(f"{src}: missing or altered (sha256 differs from manifest.engine_sources); re-run "
                              f"'python -m export trt --bundle {bundle.root} --precision {p}'")
    out = tb.build_dir(bundle) / key / tb.engine_filename(stage, p)
    log.warning("building a TensorRT %s engine for %s on %s into %s (--allow-build; parity not measured)",
                p, stage, tb.describe_machine(gpu, flavor, version), out)
    import datetime as _dt
    import time

    t0 = time.perf_counter()
    plan = tb.build_engine(src, info.input_hw, max_batch=max_batch, trt=trt)
    record = tb.engine_record(
        file=str(out), stage=stage, precision=p, gpu=gpu, flavor=flavor, version=version, source_onnx=src_rel,
        source_sha256=src_sha, stage_sha256=info.sha256, input_hw=info.input_hw, max_batch=max_batch,
        engine_sha256=tb.sha256_bytes(plan), engine_bytes=len(plan),
        built=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=time.perf_counter() - t0, parity=None, built_by="runtime --allow-build")
    tb.write_engine(out, plan, record)
    return tb.TrtRunner(out, trt=trt, label=f"tensorrt:{p}:{key}")


def make_runners(bundle, backend: str = "onnxruntime", providers: Union[str, Sequence[str]] = ("cpu",),
                 threads: Optional[int] = None, allow_build: bool = False, precision: Optional[str] = None,
                 max_batch: int = 4) -> Dict[str, "object"]:
    """The runners ``{"tissue": ..., "lesion": ...}`` of ``bundle`` on ``backend``.

    ``backend``: ``onnxruntime`` (``providers`` as in :func:`parse_providers`; ``threads``
    = intra-op threads), ``tensorrt`` (engines from the bundle's engine cache for this
    GPU and TensorRT version; ``precision`` None prefers fp16, then fp32, then int8) or
    ``auto`` (:func:`choose_backend`; the choice is logged at WARNING level so that it is
    always seen). ``allow_build``: build missing/incompatible engines into the cache
    (from ``manifest["engine_sources"]`` or the fp32 model) instead of refusing.
    ``max_batch``: optimisation-profile maximum for engines built here.

    Raises ``ValueError`` (unknown backend or provider), :class:`BackendUnavailable`
    and its subclasses from :mod:`runtime.trt_backend` (no TensorRT / GPU / compatible
    engine, with the fix in the message), :class:`runtime.bundle.BundleError` for an
    altered engine or precision ONNX.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    if backend == "auto":
        choice = choose_backend(bundle, allow_build)
        log.warning("backend auto -> %s", choice.describe())
        backend, providers = choice.backend, choice.providers
    if backend == "tensorrt":
        return {s: _trt_runner_for(bundle, s, precision, allow_build, max_batch) for s in bundle.stages}
    provs = parse_providers(providers)
    runners = {}
    for name, info in bundle.stages.items():
        trt_options = None
        if "tensorrt" in provs:
            from .trt_backend import ort_trt_options

            inp = bundle.manifest.get("models", {}).get(name, {}).get("input", "image")
            trt_options = ort_trt_options(_ort_trt_cache_dir(bundle), inp, info.input_hw, max_batch)
        runners[name] = OrtRunner(info.path, provs, threads, trt_options=trt_options)
    return runners
