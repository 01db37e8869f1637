"""GPU backends: engine cache keys and refusals, backend selection, provider checks, `runtime info`.

The logic runs here on the CPU with the real bundle and real images. Tests that need an
NVIDIA GPU and TensorRT are marked ``gpu`` and skip, saying why, where either is missing.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

from runtime import backends as bk
from runtime.backends import select as bk_select
from runtime.backends import tensorrt as tb
from runtime.bundle import BundleError, load_bundle

TRT_OK, TRT_WHY, TRT_INFO = bk.tensorrt_status()
GPU_SKIP = pytest.mark.skipif(not TRT_OK, reason=f"no NVIDIA GPU / TensorRT not installed ({TRT_WHY})")
HAS_TRT_MODULE = any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_rtx"))


def _tmp_bundle(bundle, root: Path, engines=None, sources=None) -> Path:
    """A bundle folder whose models are symlinks to the real ones and whose manifest is a copy
    (optionally with ``engines`` / ``engine_sources`` entries)."""
    root.mkdir(parents=True, exist_ok=True)
    for s in bundle.stages.values():
        (root / s.path.name).symlink_to(s.path)
    m = dict(bundle.manifest)
    if engines is not None:
        m["engines"] = engines
    if sources is not None:
        m["engine_sources"] = sources
    (root / "manifest.json").write_text(json.dumps(m))
    return root


def _entry(bundle, stage, key_cc, flavor, version, precision="fp16", gpu="NVIDIA GeForce RTX 4090", stale=False):
    key = tb.engine_key(key_cc, flavor, version)
    return {"file": tb.engine_relpath(key, stage, precision), "key": key, "stage": stage, "precision": precision,
            "gpu": gpu, "compute_capability": key_cc, "tensorrt_module": flavor, "tensorrt": version,
            "stage_onnx_sha256": "0" * 64 if stale else bundle.stages[stage].sha256}


A100 = tb.GpuInfo(0, "NVIDIA A100-SXM4-80GB", 8, 0)


# ----------------------------------------------------------------------------- keys and layout

def test_engine_key_names_architecture_and_tensorrt_version():
    assert tb.engine_key("8.9", "tensorrt", "10.13.0.35") == "sm89-trt10.13.0.35"
    assert tb.engine_key((12, 0), "tensorrt_rtx", "1.7.1.116") == "sm120-trtrtx1.7.1.116"
    assert tb.engine_key("sm86", "tensorrt", "11.4.0.106") == "sm86-trt11.4.0.106"
    assert tb.parse_cc("12.0") == (12, 0) and tb.parse_cc("sm_75") == (7, 5)
    for bad in ("eighty", "8", ""):
        with pytest.raises(ValueError):
            tb.parse_cc(bad)
    with pytest.raises(ValueError):
        tb.engine_key("8.9", "tensorrt", "10.9/../../x")  # a version cannot escape the cache folder
    with pytest.raises(ValueError):
        tb.engine_key("8.9", "openvino", "1.0")
    assert tb.engine_relpath("sm89-trt10.9.0", "tissue", "fp16") == "engines/sm89-trt10.9.0/tissue.fp16.engine"
    assert tb.source_relpath("lesion", "int8") == "engines/onnx/lesion.int8.onnx"
    with pytest.raises(ValueError):
        tb.engine_filename("tissue", "fp8")


def test_engine_record_has_the_manifest_fields():
    r = tb.engine_record(file="engines/sm80-trt10.13.0.35/tissue.fp16.engine", stage="tissue", precision="fp16",
                         gpu=A100, flavor="tensorrt", version="10.13.0.35", source_onnx="engines/onnx/tissue.fp16.onnx",
                         source_sha256="a" * 64, stage_sha256="b" * 64, input_hw=(384, 192), max_batch=4,
                         engine_sha256="c" * 64, engine_bytes=123, built="2026-01-01T00:00:00+00:00",
                         build_seconds=61.234, parity={"min_dice": 0.995, "passed": True}, built_by="test")
    for k in ("gpu", "compute_capability", "tensorrt", "source_onnx_sha256", "precision", "built", "build_seconds",
              "parity"):
        assert k in r, k
    assert r["key"] == "sm80-trt10.13.0.35" and r["gpu"] == A100.name and r["compute_capability"] == "8.0"
    json.dumps(r)  # JSON-able


# ----------------------------------------------------------------------------- selection and refusal

def test_engine_for_another_gpu_is_refused_naming_both_and_how_to_rebuild(bundle, tmp_path):
    e = _entry(bundle, "tissue", "8.9", "tensorrt", "10.9.0.34")
    root = _tmp_bundle(bundle, tmp_path / "b", engines=[e])
    (root / e["file"]).parent.mkdir(parents=True)
    (root / e["file"]).write_bytes(b"plan")
    b = load_bundle(root)
    here = tb.engine_key(A100.compute_capability, "tensorrt", "10.13.0.35")
    chosen, rejected = tb.select_engine(b, "tissue", here)
    assert chosen is None and len(rejected) == 1
    msg = tb.refusal_message(b, "tissue", None, A100, "tensorrt", "10.13.0.35", rejected)
    for part in ("NVIDIA GeForce RTX 4090", "sm89", "10.9.0.34",  # what the engine was built for
                 "A100", "sm80", "10.13.0.35",                   # this machine
                 f"python -m export trt --bundle {root}", "--allow-build"):
        assert part in msg, (part, msg)


def test_select_engine_prefers_fp16_and_rejects_stale_or_missing(bundle, tmp_path):
    key_cc, ver = "8.0", "10.13.0.35"
    entries = [_entry(bundle, "tissue", key_cc, "tensorrt", ver, "fp32"),
               _entry(bundle, "tissue", key_cc, "tensorrt", ver, "fp16"),
               _entry(bundle, "tissue", key_cc, "tensorrt", ver, "int8", stale=True),
               _entry(bundle, "lesion", key_cc, "tensorrt", ver, "fp16")]  # file never written
    root = _tmp_bundle(bundle, tmp_path / "b", engines=entries)
    for e in entries[:3]:
        (root / e["file"]).parent.mkdir(parents=True, exist_ok=True)
        (root / e["file"]).write_bytes(b"plan")
    b = load_bundle(root)
    key = tb.engine_key(key_cc, "tensorrt", ver)
    chosen, rejected = tb.select_engine(b, "tissue", key)
    assert chosen["precision"] == "fp16"
    assert [(e["precision"], why.split(":")[0]) for e, why in rejected] == [("int8", "stale")]
    assert tb.select_engine(b, "tissue", key, "fp32")[0]["precision"] == "fp32"
    assert tb.select_engine(b, "tissue", key, "int8")[0] is None
    chosen, rejected = tb.select_engine(b, "lesion", key)
    assert chosen is None and "missing" in rejected[0][1]


def test_engines_and_sources_do_not_break_load_bundle(bundle, tmp_path):
    e = _entry(bundle, "tissue", "8.9", "tensorrt", "10.9.0.34")
    src = {"tissue": {"fp16": {"file": "engines/onnx/tissue.fp16.onnx", "sha256": "d" * 64}}}
    root = _tmp_bundle(bundle, tmp_path / "b", engines=[e], sources=src)
    b = load_bundle(root)  # hashes of the models verified, engine entries ignored by the loader
    assert b.manifest["engines"][0]["key"] == "sm89-trt10.9.0.34"
    m = json.loads((root / "manifest.json").read_text())
    m["models"]["tissue"]["sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(root)  # the models' integrity check still works


def test_read_only_bundle_caches_engines_in_the_user_cache(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_CASCADE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tb.engines, "_writable", lambda p: False)
    dirs = tb.engine_dirs(bundle)
    assert dirs[0] == Path(bundle.root) / "engines"
    assert dirs[1].parent == tmp_path / "cache" / "engines" and len(dirs[1].name) == 16
    assert tb.build_dir(bundle) == dirs[1]
    monkeypatch.setattr(tb.engines, "_writable", lambda p: True)
    assert tb.engine_dirs(bundle) == [Path(bundle.root) / "engines"]


class _FakeTrt:
    """Stands in for the tensorrt module where only its name and version are read."""

    __name__ = "tensorrt"
    __version__ = "10.13.0.35"


def test_allow_build_builds_into_cache_writes_sidecar_and_reuses_it(bundle, tmp_path, monkeypatch):
    """The --allow-build flow without a GPU: TensorRT's builder and runner are replaced by
    recorders; what is checked is the cache logic (source choice, paths, sidecar, reuse)."""
    other = _entry(bundle, "tissue", "8.9", "tensorrt", "10.9.0.34")
    root = _tmp_bundle(bundle, tmp_path / "b", engines=[other])
    b = load_bundle(root)
    built, opened = [], []
    monkeypatch.setattr(tb, "import_tensorrt", lambda module=None: _FakeTrt)
    monkeypatch.setattr(tb, "local_gpu", lambda device=0: A100)
    monkeypatch.setattr(tb, "build_engine", lambda src, hw, max_batch, trt: built.append((Path(src), hw, max_batch))
                        or b"PLAN-" + Path(src).name.encode())
    monkeypatch.setattr(tb, "TrtRunner", lambda path, trt, label: opened.append((Path(path), label)) or label)

    with pytest.raises(tb.EngineIncompatible, match="RTX 4090.*A100"):
        bk.make_runners(b, "tensorrt")
    with pytest.raises(tb.EngineIncompatible, match="--onnx-only"):
        bk.make_runners(b, "tensorrt", allow_build=True, precision="fp16")  # no fp16 ONNX in this bundle
    assert not built

    runners = bk.make_runners(b, "tensorrt", allow_build=True, max_batch=2)
    key = "sm80-trt10.13.0.35"
    assert runners == {"tissue": f"tensorrt:fp32:{key}", "lesion": f"tensorrt:fp32:{key}"}
    assert [(p.name, hw, mb) for p, hw, mb in built] == [(f"{s}.onnx", tuple(b.stages[s].input_hw), 2)
                                                          for s in ("tissue", "lesion")]
    for stage in ("tissue", "lesion"):
        eng = root / "engines" / key / f"{stage}.fp32.engine"
        assert eng.read_bytes() == f"PLAN-{stage}.onnx".encode()
        side = json.loads((eng.parent / (eng.name + ".json")).read_text())
        assert side["parity"] is None and side["built_by"] == "runtime --allow-build"
        assert side["source_onnx_sha256"] == b.stages[stage].sha256 and side["key"] == key
        assert side["sha256"] == tb.sha256_bytes(eng.read_bytes())
    assert json.loads((root / "manifest.json").read_text()).get("engines") == [other]  # runtime never writes it

    built.clear()
    bk.make_runners(b, "tensorrt")  # now cached: no build, no refusal
    assert not built and opened[-1][0] == root / "engines" / key / "lesion.fp32.engine"

    (root / "engines" / key / "lesion.fp32.engine").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="altered"):
        bk.make_runners(b, "tensorrt")


# ----------------------------------------------------------------------------- providers and selection

def test_parse_providers():
    assert bk.parse_providers("TensorRT, cuda,cpu,cuda") == ["tensorrt", "cuda", "cpu"]
    assert bk.parse_providers(["CUDAExecutionProvider"]) == ["cuda"]
    assert bk.parse_providers("") == ["cpu"]
    with pytest.raises(bk.UnknownProvider, match="use cpu, cuda, tensorrt"):
        bk.parse_providers("cpu,rocm")
    assert issubclass(bk.UnknownProvider, ValueError) and issubclass(bk.UnknownProvider, bk.BackendUnavailable)


def test_ort_tensorrt_provider_options_put_the_cache_in_the_bundle(bundle, tmp_path):
    cache = tb.build_dir(bundle) / "sm89-trt10.13.0.35" / "ort-trt-ep"
    o = tb.ort_trt_options(cache, "image", (384, 192), max_batch=4)
    assert o["trt_engine_cache_enable"] is True and o["trt_timing_cache_enable"] is True
    assert Path(o["trt_engine_cache_path"]) == cache and str(cache).startswith(str(Path(bundle.root)))
    assert o["trt_fp16_enable"] is False
    assert (o["trt_profile_min_shapes"], o["trt_profile_max_shapes"]) == ("image:1x1x384x192", "image:4x1x384x192")


@pytest.mark.skipif(bk.provider_status("cuda")[0], reason="the CUDA provider is usable on this machine")
def test_cuda_provider_missing_is_a_clear_error(bundle):
    with pytest.raises(bk.BackendUnavailable, match="onnxruntime-gpu"):
        bk.make_runners(bundle, "onnxruntime", "cuda")
    ok, why = bk.provider_status("tensorrt")
    assert not ok and why


@pytest.mark.skipif(HAS_TRT_MODULE, reason="TensorRT is installed here")
def test_missing_tensorrt_says_how_to_install(bundle):
    with pytest.raises(tb.TensorRTUnavailable) as ei:
        bk.make_runners(bundle, "tensorrt")
    msg = str(ei.value)
    assert "TensorRT is not installed" in msg and "scripts/install-gpu.sh" in msg and "tensorrt-rtx" in msg
    assert isinstance(ei.value, bk.BackendUnavailable)  # the CLI turns it into 'error: ...', exit 2


def test_cuda_gpus_never_raises_and_says_why():
    gpus, why = tb.cuda_gpus()
    assert (gpus and why is None) or (not gpus and why)
    if importlib.util.find_spec("cuda") is not None and not gpus:
        cudart = tb.import_cudart()
        err = cudart.cudaGetDeviceCount()[0]
        with pytest.raises(tb.CudaError, match=err.name):
            tb.cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    assert tb.cuda_check((0, 7)) == 7 and tb.cuda_check((0,)) is None and tb.cuda_check((0, 1, 2)) == (1, 2)


def test_auto_order_prefers_engines_then_ort_tensorrt_then_cuda_then_cpu(bundle, monkeypatch):
    status = {"tensorrt": (True, "ok"), "cuda": (True, "ok"), "cpu": (True, "built in")}
    ready = {"v": (True, "engines for k: tissue fp16, lesion fp16")}
    monkeypatch.setattr(bk_select, "tensorrt_status", lambda: (status["trt"][0], status["trt"][1],
                                                       {"key": "k"} if status["trt"][0] else None))
    monkeypatch.setattr(bk_select, "provider_status", lambda name: status[name])
    monkeypatch.setattr(bk_select, "_engines_ready", lambda b, key: ready["v"])
    status["trt"] = (True, "tensorrt 10 on GPU")
    assert bk.choose_backend(bundle).backend == "tensorrt"
    ready["v"] = (False, "no engine for tissue, lesion")
    c = bk.choose_backend(bundle)
    assert (c.backend, c.providers) == ("onnxruntime", ["tensorrt", "cuda"])
    assert "tensorrt: no engine" in c.describe() and "--allow-build" in c.describe()
    assert bk.choose_backend(bundle, allow_build=True).backend == "tensorrt"
    status["tensorrt"] = (False, "failed to initialise")
    assert bk.choose_backend(bundle).providers == ["cuda"]
    status["cuda"] = (False, "no GPU")
    status["trt"] = (False, "TensorRT is not installed")
    c = bk.choose_backend(bundle)
    assert c.providers == ["cpu"] and [s.split(":")[0] for s in c.skipped] == \
        ["tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda"]


def test_auto_backend_runs_real_images_like_explicit_cpu(bundle, cascade, ddsm):
    from runtime.cascade import Cascade
    from runtime.io import read_image

    expected = bk.choose_backend(bundle)
    auto = Cascade(bundle, backend="auto", threads=2)
    assert auto.backend == bk.PROVIDERS[expected.providers[0]] if expected.backend == "onnxruntime" else \
        auto.backend.startswith("tensorrt")
    if expected.backend != "onnxruntime" or expected.providers != ["cpu"]:
        pytest.skip(f"auto picks {expected.describe()} here; the CPU comparison below is for CPU-only machines")
    px, meta = read_image(ddsm / "test" / "fgt_seg" / "A_0040_1.RIGHT_MLO.png")
    a, r = auto.run(px, meta), cascade.run(px, meta)
    assert np.array_equal(a.tissue, r.tissue) and np.allclose(a.lesion_prob, r.lesion_prob, atol=1e-6)


def test_cli_auto_says_which_backend(bundle, ddsm, tmp_path, capsys):
    from runtime.cli import _cascade, build_parser

    a = build_parser().parse_args(["infer", "--image-dir", str(ddsm / "test" / "fgt_seg"), "--out", str(tmp_path),
                                   "--backend", "auto", "--threads", "1"])
    c = _cascade(a)
    err = capsys.readouterr().err
    assert err.startswith("backend: ") and bk.choose_backend(bundle).describe() in err
    choice = bk.choose_backend(bundle)
    if choice.backend == "onnxruntime":  # the session really runs on what was announced
        assert c.backend == bk.PROVIDERS[choice.providers[0]]
    else:
        assert c.backend.startswith("tensorrt:")


@pytest.mark.skipif(HAS_TRT_MODULE, reason="TensorRT is installed here")
def test_cli_tensorrt_backend_without_tensorrt_exits_2_with_the_fix(ddsm, tmp_path, capsys):
    from runtime.cli import main

    rc = main(["infer", "--image-dir", str(ddsm / "test" / "fgt_seg"), "--out", str(tmp_path / "o"),
               "--backend", "tensorrt", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: TensorRT is not installed" in err and "install-gpu.sh" in err
    assert not (tmp_path / "o" / "summary.csv").exists()


def test_available_backends_for_benchmarks(bundle):
    rows = bk.available_backends(bundle)
    assert rows[-1]["name"] == "onnxruntime-cpu" and all(r["usable"] for r in rows)
    names = [r["name"] for r in bk.backend_report(bundle)]
    assert names == ["tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"]
    for r in rows:  # every listed backend really builds runners (CPU only here; engines need allow_build)
        if r["backend"] == "onnxruntime" and r["providers"] == ["cpu"]:
            runners = bk.make_runners(bundle, r["backend"], r["providers"], threads=1)
            assert set(runners) == {"tissue", "lesion"} and runners["tissue"].providers[0] == "CPUExecutionProvider"


# ----------------------------------------------------------------------------- runtime info

def test_runtime_info_is_honest():
    import onnxruntime as ort

    from runtime.info import machine_info

    info = machine_info()
    have = ort.get_available_providers()
    assert info["execution_providers"] == have
    assert "cpu" in info["usable_providers"]
    for short, full in bk.PROVIDERS.items():
        if full not in have:  # never claim a provider the build lacks
            assert short not in info["usable_providers"]
    rows = {r["name"]: r for r in info["backends"]}
    assert rows["onnxruntime-cpu"]["usable"]
    if not info["cuda"]["devices"]:  # no GPU: nothing GPU-bound may be usable, and each says why
        assert info["usable_providers"] == ["cpu"] and info["engine_cache_key"] is None
        assert info["cuda"]["no_devices_because"]
        for name in ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda"):
            assert rows[name]["usable"] is False and rows[name]["detail"], name
    if not HAS_TRT_MODULE:
        assert all(v.startswith("not available") for v in info["tensorrt"].values())
        assert "fix" in rows["tensorrt"] and "install-gpu.sh" in rows["tensorrt"]["fix"]
    assert info["auto_backend"].startswith("onnxruntime [cpu]") or TRT_OK or bk.provider_status("cuda")[0]
    import importlib.util

    assert info["png_deflate"] == ("isal" if importlib.util.find_spec("isal") else "zlib")


def test_runtime_info_cli_prints_json():
    out = subprocess.run([sys.executable, "-m", "runtime", "info"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert {"backends", "usable_providers", "cuda", "tensorrt", "engine_cache_key"} <= set(info)


def test_gpu_modules_import_without_tensorrt_or_torch():
    code = ("import sys; import runtime.trt_backend, runtime.backends, runtime.info; "
            "bad = [m for m in ('tensorrt', 'tensorrt_rtx', 'torch', 'cupy') if m in sys.modules]; "
            "assert not bad, bad; print('OK')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr


# ----------------------------------------------------------------------------- on a GPU

def _real_inputs(bundle, ddsm, n=4):
    from export.trt import bundle_stage_inputs

    imgs = sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:n]
    ref = bk.OrtRunner(bundle.stages["tissue"].path)
    return imgs, bundle_stage_inputs(bundle, imgs, ref)


@pytest.mark.gpu
@GPU_SKIP
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_trt_engine_parity_on_real_images(bundle, ddsm, tmp_path, precision):
    from export.bundle_writer import agreement
    from export.fp16 import convert_to_fp16
    from export.trt import PARITY_MIN

    imgs, inputs = _real_inputs(bundle, ddsm)
    for stage, info in bundle.stages.items():
        src = info.path
        if precision == "fp16":
            src = tmp_path / f"{stage}.fp16.onnx"
            convert_to_fp16(info.path, src)
        plan = tb.build_engine(src, info.input_hw, max_batch=2)
        (tmp_path / "e").write_bytes(plan)
        r = tb.TrtRunner(tmp_path / "e")
        assert r.max_batch == 2
        batch = np.concatenate(inputs[stage][:3])  # 3 > max_batch: runs in chunks
        assert r(batch).shape[0] == 3
        fig = agreement(bk.OrtRunner(info.path), r, inputs[stage], stage, bundle.lesion_threshold)
        assert min(fig.values()) >= PARITY_MIN[precision][stage], fig
        r.close()


@pytest.mark.gpu
@GPU_SKIP
def test_gpu_export_allow_build_and_refusal(bundle, ddsm, tmp_path):
    from export.cli import main as export_main

    root = _tmp_bundle(bundle, tmp_path / "b")
    rc = export_main(["trt", "--bundle", str(root), "--precision", "fp16", "--parity-dir",
                      str(ddsm / "test" / "fgt_seg"), "--parity-count", "3"])
    assert rc == 0
    b = load_bundle(root)
    assert {e["stage"] for e in b.manifest["engines"]} == {"tissue", "lesion"}
    assert all(e["parity"]["passed"] and e["key"] == TRT_INFO["key"] for e in b.manifest["engines"])
    runners = bk.make_runners(b, "tensorrt")
    assert runners["tissue"].providers[0] == f"tensorrt:fp16:{TRT_INFO['key']}"
    # the same engines relabelled as built elsewhere are refused, and rebuilt with allow_build
    m = json.loads((root / "manifest.json").read_text())
    other = "sm10-trt0.0.1"
    for e in m["engines"]:
        new = e["file"].replace(TRT_INFO["key"], other)
        (root / new).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / e["file"], root / new)
        e.update(file=new, key=other, compute_capability="1.0", tensorrt="0.0.1")
    (root / "manifest.json").write_text(json.dumps(m))
    b = load_bundle(root)
    with pytest.raises(tb.EngineIncompatible, match="sm10"):
        bk.make_runners(b, "tensorrt")
    runners = bk.make_runners(b, "tensorrt", allow_build=True)
    assert runners["lesion"].providers[0].startswith("tensorrt:fp16:")


@pytest.mark.gpu
@pytest.mark.skipif(not bk.provider_status("cuda")[0], reason="no NVIDIA GPU / onnxruntime-gpu not installed")
def test_ort_cuda_provider_matches_cpu(bundle, ddsm):
    from export.bundle_writer import agreement

    _, inputs = _real_inputs(bundle, ddsm, 2)
    gpu = bk.make_runners(bundle, "onnxruntime", "cuda")
    assert gpu["tissue"].providers[0] == "CUDAExecutionProvider"
    fig = agreement(bk.OrtRunner(bundle.stages["tissue"].path), gpu["tissue"], inputs["tissue"], "tissue", 0.5)
    assert min(fig.values()) >= 0.99, fig


@pytest.mark.gpu
@pytest.mark.skipif(not bk.provider_status("tensorrt")[0],
                    reason="no NVIDIA GPU / TensorRT provider of onnxruntime-gpu not usable")
def test_ort_tensorrt_provider_caches_engines_in_the_bundle(bundle, tmp_path):
    root = _tmp_bundle(bundle, tmp_path / "b")
    b = load_bundle(root)
    r = bk.make_runners(b, "onnxruntime", "tensorrt")
    assert r["tissue"].providers[0] == "TensorrtExecutionProvider"
    r["tissue"](np.zeros((1, 1, *b.stages["tissue"].input_hw), np.float32))
    assert any((root / "engines").rglob("*.engine")), "the TensorRT provider cached nothing in the bundle"
