"""Choosing a backend: what is usable here, the registry of backends, and :func:`make_runners`.

A runner maps a float32 batch (N, 1, h, w) to float32 logits; see :mod:`runtime.stages`.
:func:`make_runners` builds the two runners of a cascade for a backend:

- ``onnxruntime`` with providers ``cpu`` / ``cuda`` / ``tensorrt`` (the latter two need
  ``onnxruntime-gpu``, which replaces ``onnxruntime``; the TensorRT provider keeps its
  engine cache inside the bundle's engine cache);
- ``tensorrt``: prebuilt engines from the bundle (``python -m export trt``), run by
  :class:`runtime.backends.tensorrt.TrtRunner`; engines built for another GPU or TensorRT
  version are refused unless ``allow_build``;
- ``auto``: the fastest usable one (see :func:`choose_backend`), saying which and why.

:data:`REGISTRY` names every backend once (its ``--backend`` help, its rows in
:func:`backend_report`, whether one loaded runner takes several images at once); the CLI's
``--backend`` choices, ``runtime info`` and the benchmarks read it.

Sources: ONNX Runtime execution providers and the TensorRT provider options
(onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html); ORT falls
back to the CPU silently when a provider cannot initialise, so usability is probed, not
assumed from ``get_available_providers()`` (which lists what the build contains).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from .base import BackendUnavailable
from .onnxruntime import GPU_ORT_HINT, OrtRunner, parse_providers, provider_status

log = logging.getLogger("runtime.backends")



@dataclass(frozen=True)
class BackendSpec:
    """One entry of :data:`REGISTRY`.

    ``name``: the ``--backend`` value. ``help``: one phrase for ``--backend --help``.
    ``report``: ``report(bundle) -> [(speed_rank, row), ...]``, this backend's rows of
    :func:`backend_report` (``bundle`` may be None; never raises), ``speed_rank`` an int,
    lower = assumed faster across all backends. ``parallel_images``: whether one loaded
    runner can serve several images at once (False: ``runtime infer`` runs one worker).
    """

    name: str
    help: str
    report: Callable[[object], List[Tuple[int, dict]]]
    parallel_images: bool = True


@functools.lru_cache(maxsize=None)
def tensorrt_status() -> Tuple[bool, str, Optional[dict]]:
    """Whether prebuilt TensorRT engines can run here: ``(usable, reason, info)``.

    ``info`` (when usable): ``{"module", "version", "gpu", "compute_capability", "key"}``
    where ``key`` is this machine's engine-cache key. Needs TensorRT (``tensorrt`` or
    ``tensorrt_rtx``), cuda-python and a GPU. Never raises.
    """
    from .tensorrt import cuda_gpus, engine_key, import_cudart, import_tensorrt, trt_flavor, trt_version

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
    from .tensorrt import select_engine

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


def _tensorrt_rows(bundle) -> List[Tuple[int, dict]]:
    """The ``tensorrt`` row of :func:`backend_report` (prebuilt engines), speed rank 0."""
    from .tensorrt import CUDA_PYTHON_HINT, INSTALL_HINT

    ok, why, info = tensorrt_status()
    row = {"name": "tensorrt", "backend": "tensorrt", "providers": [], "usable": ok, "detail": why}
    if ok and bundle is not None:
        row["engines_ready"], row["engines"] = _engines_ready(bundle, info["key"])
    if not ok:
        row["fix"] = (INSTALL_HINT if "TensorRT is" in why else CUDA_PYTHON_HINT if "cuda-python" in why
                      else "run on a machine with an NVIDIA GPU and its driver (nvidia-smi must list the GPU)")
    return [(0, row)]


def _onnxruntime_rows(bundle) -> List[Tuple[int, dict]]:
    """The ``onnxruntime-*`` rows of :func:`backend_report`: TensorRT provider (rank 1), CUDA (2), CPU (3)."""
    out = []
    for rank, name, provs in ((1, "onnxruntime-tensorrt", ["tensorrt", "cuda"]), (2, "onnxruntime-cuda", ["cuda"]),
                              (3, "onnxruntime-cpu", ["cpu"])):
        ok, why = provider_status(provs[0])
        row = {"name": name, "backend": "onnxruntime", "providers": provs, "usable": ok, "detail": why}
        if not ok and why.startswith("not in this onnxruntime"):
            row["fix"] = GPU_ORT_HINT
        out.append((rank, row))
    return out


#: Every backend by its ``--backend`` name, in the order ``--help`` lists them.
REGISTRY: Dict[str, BackendSpec] = {
    spec.name: spec for spec in (
        BackendSpec("onnxruntime", "onnxruntime (default)", _onnxruntime_rows),
        BackendSpec("tensorrt", "tensorrt (the bundle's prebuilt engines for this GPU)", _tensorrt_rows,
                    parallel_images=False),
    )
}

#: The backends ``--backend`` accepts, ``auto`` first.
BACKENDS: Tuple[str, ...] = ("auto", *REGISTRY)


def backend_help() -> str:
    """The ``--backend`` help text, built from :data:`REGISTRY`."""
    return (", ".join(spec.help for spec in REGISTRY.values())
            + ", or auto (the fastest usable here; says which on stderr)")


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
    rows = [r for spec in REGISTRY.values() for r in spec.report(bundle)]
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


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
    from .tensorrt import build_dir

    ok, _, info = tensorrt_status()
    root = build_dir(bundle)
    return root / info["key"] / "ort-trt-ep" if ok and info["module"] == "tensorrt" else root / "ort-trt-ep"


def _trt_runner_for(bundle, stage: str, precision: Optional[str], allow_build: bool, max_batch: int):
    from . import tensorrt as tb
    from ..bundle import BundleError, sha256_file

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
    # --allow-build: build from the precision ONNX recorded by export (fp32 copy / fp16 / int8 Q/DQ), or fp32 from
    # the stage model.
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
    if p == "fp32" and "fp32" not in sources:  # an fp32 bundle's own model (int8 bundles record an fp32 copy)
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
    and its subclasses from :mod:`runtime.backends.tensorrt` (no TensorRT / GPU / compatible
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
            from .tensorrt import ort_trt_options

            inp = bundle.manifest.get("models", {}).get(name, {}).get("input", "image")
            trt_options = ort_trt_options(_ort_trt_cache_dir(bundle), inp, info.input_hw, max_batch)
        precision = bundle.manifest.get("models", {}).get(name, {}).get("precision")
        runners[name] = OrtRunner(info.path, provs, threads, trt_options=trt_options, precision=precision)
    return runners
