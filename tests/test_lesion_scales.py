"""Stage 2 at several scales (``lesion_scales``): tiling, merging, bundle and CLI settings."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from runtime.bundle import BundleError, load_bundle, parse_scales
from runtime.stages import lesion_probability, tile_starts


@pytest.mark.parametrize("n,tile", [(256, 256), (300, 256), (512, 256), (640, 192), (1000, 192)])
def test_tiles_cover_with_overlap(n, tile):
    starts = tile_starts(n, tile)
    assert starts[0] == 0 and starts[-1] == max(0, n - tile)
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered.all()
    assert all(b - a <= 0.75 * tile + 1 for a, b in zip(starts, starts[1:]))  # >= 25 % overlap


def _identity_model(calls):
    """A 'model' whose probability is its input (logit(x)), pixel by pixel: tiling it is exact."""
    def run(x):
        calls.append(x.shape)
        p = np.clip(x, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p)).astype(np.float32)
    return run


def test_second_scale_runs_tiles_in_one_batch_and_merges_by_maximum(mias):
    import cv2

    crop = cv2.imread(str(sorted(mias.rglob("*.png"))[0]), cv2.IMREAD_GRAYSCALE)[200:700, 100:500]
    calls = []
    one = lesion_probability(crop, _identity_model(calls), (256, 192), (1.0,))
    two = lesion_probability(crop, _identity_model(calls), (256, 192), (1.0, 2.0))
    assert calls[0] == (1, 1, 256, 192)
    assert calls[2] == (9, 1, 256, 192)  # 512 x 384 in 3 x 3 tiles of 256 x 192, one batch
    assert two.shape == one.shape == (256, 192) and two.dtype == np.float32
    assert (two >= one - 1e-6).all()
    # With a pixel-wise model the magnified, tiled pass returns the crop itself (area-averaged back).
    only2 = lesion_probability(crop, _identity_model(calls), (256, 192), (2.0,))
    assert np.abs(only2 - one).mean() < 2 / 255


def test_scales_parse_and_refuse_bad_values():
    assert parse_scales("2,1") == (1.0, 2.0) and parse_scales([1, 1.5]) == (1.0, 1.5)
    for bad in ("", "0.5,1", "x"):
        with pytest.raises(ValueError):
            parse_scales(bad)
    with pytest.raises(ValueError, match="below 1"):
        lesion_probability(np.zeros((8, 8), np.uint8), lambda x: x, (8, 8), (0.5,))


def test_bundle_scales_reach_the_cascade_and_a_bad_value_names_the_manifest(bundle, tmp_path, mias):
    import cv2

    from runtime.cascade import Cascade

    root = tmp_path / "b"
    shutil.copytree(bundle.root, root)
    m = json.loads((root / "manifest.json").read_text())
    m["models"]["lesion"]["scales"] = [1, 2]
    (root / "manifest.json").write_text(json.dumps(m))
    b = load_bundle(root)
    assert b.lesion_scales == (1.0, 2.0)
    img = cv2.imread(str(sorted(mias.rglob("*.png"))[0]), cv2.IMREAD_GRAYSCALE)
    c2 = Cascade(b, threads=2)
    c1 = Cascade(b, threads=2, lesion_scales=[1])
    assert c2.lesion_scales == (1.0, 2.0) and c1.lesion_scales == (1.0,)
    r2, r1 = c2.run(img), c1.run(img)
    assert r2.fgt_box == r1.fgt_box
    assert (r2.prob_box >= r1.prob_box - 1e-3).all() and r2.prob_box.max() >= r1.prob_box.max()
    m["models"]["lesion"]["scales"] = [0.5]
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="scales"):
        load_bundle(root).lesion_scales


def test_cli_refuses_a_scale_below_one(capsys):
    from runtime.cli import main

    with pytest.raises(SystemExit) as e:
        main(["infer", "--image-dir", ".", "--out", "x", "--lesion-scales", "0.5"])
    assert e.value.code == 2 and "lesion-scales" in capsys.readouterr().err
