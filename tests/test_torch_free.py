"""The runtime must import and run a cascade where torch cannot be imported."""
import subprocess
import sys
import textwrap

from conftest import REPO

BLOCK_TORCH = textwrap.dedent("""
    import sys, importlib.abc
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name.startswith("torchvision"):
                raise ImportError(f"torch is blocked in this test ({name})")
    sys.meta_path.insert(0, _Block())
""")


def test_runtime_runs_cascade_without_torch(ddsm, bundle):
    img = ddsm / "test" / "fgt_seg" / "A_0040_1.RIGHT_MLO.png"
    code = BLOCK_TORCH + textwrap.dedent(f"""
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch import was not blocked")
        from runtime.cascade import Cascade
        from runtime.io import read_image
        px, meta = read_image({str(img)!r})
        r = Cascade().run(px, meta)
        assert r.tissue.shape == px.shape
        assert not any(m.startswith("torch") for m in sys.modules), "runtime imported torch"
        print("OK", round(r.fgt_fraction, 3))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK")


def test_runtime_modules_do_not_import_torch():
    """Static check: no module of the runtime package names torch in an import."""
    import ast

    for path in (REPO / "runtime").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("torch", "torchvision", "train", "export") for n in names), \
                f"{path} imports {names}"
