"""Model integrity: a bundle whose files do not match the manifest's sha256 is refused; the runtime
never unpickles; training loads checkpoints with ``torch.load(weights_only=True)``."""
import ast
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from runtime.bundle import BundleError, load_bundle

UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "torch"}


def _copy_bundle(src, dst, tamper: str = None):
    """Copy a bundle (manifest + models); with ``tamper`` flip one byte in the middle of that stage's file."""
    dst.mkdir()
    shutil.copy(src / "manifest.json", dst / "manifest.json")
    manifest = json.loads((src / "manifest.json").read_text())
    for stage, entry in manifest["models"].items():
        if stage == tamper:
            shutil.copy(src / entry["file"], dst / entry["file"])
            with open(dst / entry["file"], "r+b") as f:
                f.seek(f.seek(0, 2) // 2)
                b = f.read(1)
                f.seek(-1, 1)
                f.write(bytes([b[0] ^ 0x01]))
        else:
            (dst / entry["file"]).symlink_to(src / entry["file"])
    return dst


@pytest.mark.parametrize("stage", ["tissue", "lesion"])
def test_one_flipped_byte_is_refused(bundle, tmp_path, stage):
    intact = _copy_bundle(bundle.root, tmp_path / "intact")
    assert load_bundle(intact).stages[stage].sha256 == bundle.stages[stage].sha256
    bad = _copy_bundle(bundle.root, tmp_path / "bad", tamper=stage)
    with pytest.raises(BundleError) as e:
        load_bundle(bad)
    assert f"{stage}.onnx" in str(e.value) and "does not match the manifest" in str(e.value)


def test_cli_refuses_a_tampered_bundle_before_running(bundle, ddsm, tmp_path):
    bad = _copy_bundle(bundle.root, tmp_path / "bad", tamper="lesion")
    img = tmp_path / "in"
    img.mkdir()
    (img / "a.png").symlink_to(ddsm / "test" / "fgt_seg" / "A_0040_1.RIGHT_MLO.png")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "runtime", "infer", "--image-dir", str(img), "--out", str(out),
                        "--model", str(bad), "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "lesion.onnx" in r.stderr and "does not match the manifest" in r.stderr
    assert not out.exists() or not list(out.glob("*.png"))


def _imports_and_calls(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield "import", a.name.split(".")[0], node
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield "import", node.module.split(".")[0], node
        elif isinstance(node, ast.Call):
            yield "call", node, node


def test_runtime_code_never_unpickles():
    """Static: no runtime module imports a pickle-based loader or passes allow_pickle=True."""
    files = sorted((REPO / "runtime").rglob("*.py"))
    assert len(files) > 10
    for path in files:
        for kind, what, node in _imports_and_calls(path):
            if kind == "import":
                assert what not in UNPICKLERS, f"{path}:{node.lineno} imports {what}"
            else:
                for kw in what.keywords:
                    if kw.arg == "allow_pickle":
                        assert isinstance(kw.value, ast.Constant) and kw.value.value is False, \
                            f"{path}:{node.lineno} allow_pickle"


def test_runtime_runs_with_unpickling_disabled(ddsm, dicom_files, tmp_path):
    """Dynamic: with every unpickling entry point of the standard library raising, the runtime loads
    the bundle, reads a PNG and a DICOM, runs the cascade and writes its outputs."""
    code = textwrap.dedent(f"""
        import pickle, _pickle
        def refuse(*a, **k):
            raise AssertionError("unpickling attempted")
        class NoUnpickler:
            def __init__(self, *a, **k):
                refuse()
        for m in (pickle, _pickle):
            m.load = m.loads = refuse
            m.Unpickler = NoUnpickler
        from runtime.cascade import Cascade
        from runtime.io import read_image
        from runtime.outputs import write_outputs
        c = Cascade()
        px, meta = read_image({str(ddsm / "test" / "fgt_seg" / "A_0040_1.RIGHT_MLO.png")!r})
        write_outputs({str(tmp_path)!r}, "a", px, c.run(px, meta))
        dpx, dmeta = read_image({str(dicom_files[0])!r})
        print("OK", dpx.shape)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK") and len(list(tmp_path.glob("a_*.png"))) == 5


def test_training_loads_checkpoints_with_weights_only():
    """Static: every torch.load in train/ and export/ passes weights_only=True, and nothing there
    calls pickle's loaders."""
    loads = []
    for path in sorted([*(REPO / "train").rglob("*.py"), *(REPO / "export").rglob("*.py")]):
        for kind, what, node in _imports_and_calls(path):
            if kind != "call" or not isinstance(what.func, ast.Attribute):
                continue
            owner = what.func.value
            name = owner.id if isinstance(owner, ast.Name) else None
            if name == "torch" and what.func.attr == "load":
                kws = {kw.arg: kw.value for kw in what.keywords}
                ok = isinstance(kws.get("weights_only"), ast.Constant) and kws["weights_only"].value is True
                assert ok, f"{path}:{node.lineno}: torch.load without weights_only=True"
                loads.append(f"{path.name}:{node.lineno}")
            assert not (name in ("pickle", "dill", "joblib") and what.func.attr in ("load", "loads")), \
                f"{path}:{node.lineno} unpickles"
    assert any(s.startswith("checkpoint.py") for s in loads), loads  # the checkpoint loader was checked
