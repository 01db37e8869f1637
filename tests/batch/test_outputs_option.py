"""``runtime infer --outputs``: only the requested PNGs are written, and ``--resume`` judges a
previous row by the outputs asked for now."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

from conftest import REPO

from runtime.batch import load_summary, run_batch
from runtime.outputs import OUTPUT_KEYS, output_paths


def _folder(ddsm, tmp_path, n=2):
    img = tmp_path / "in"
    img.mkdir()
    for p in sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:n]:
        (img / p.name).symlink_to(p)
    return img, sorted(img.iterdir())


def test_only_requested_outputs_and_resume(ddsm, cascade, tmp_path):
    img, files = _folder(ddsm, tmp_path)
    out = tmp_path / "out"
    rep = run_batch(cascade, files, img, out, progress=False, outputs=("prob", "lesion"))
    assert not rep.failed
    for f, row in zip(files, rep.rows):
        paths = output_paths(out, row["stem"])
        assert set(row["outputs"]) == {paths["prob"].name, paths["lesion"].name}
        assert [k for k in OUTPUT_KEYS if paths[k].exists()] == ["prob", "lesion"]
    # the same outputs again: complete; a subset: complete; more outputs: run again
    assert len(run_batch(cascade, files, img, out, progress=False, resume_rows=load_summary(out),
                         outputs=("prob", "lesion")).skipped) == 2
    assert len(run_batch(cascade, files, img, out, progress=False, resume_rows=load_summary(out),
                         outputs=("prob",)).skipped) == 2
    rep = run_batch(cascade, files, img, out, progress=False, resume_rows=load_summary(out))
    assert not rep.skipped and not rep.failed
    assert all(output_paths(out, r["stem"])[k].exists() for r in rep.rows for k in OUTPUT_KEYS)
    # Outputs are as readable as files the user's umask allows (a temp file alone would be 0600).
    written = [output_paths(out, r["stem"])[k] for r in rep.rows for k in OUTPUT_KEYS] + [out / "summary.csv"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o666 & ~_umask()}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_cli_refuses_unknown_outputs(ddsm, tmp_path):
    img, _ = _folder(ddsm, tmp_path, 1)
    r = subprocess.run([sys.executable, "-m", "runtime", "infer", "--image-dir", str(img), "--out",
                        str(tmp_path / "out"), "--outputs", "tissue,masks"], capture_output=True, text=True,
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and "--outputs" in r.stderr and "masks" in r.stderr
    assert not (tmp_path / "out").exists()
