"""runtime.png: the PNGs it writes decode, in OpenCV and in Pillow, to the array given."""
from __future__ import annotations

import zlib
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import DATA, need
from runtime.io import read_image
from runtime.outputs import atomic_write_png
from runtime.png import encode_png


def _mammogram() -> np.ndarray:
    """A real mammogram (uint8 grey), so the encoder sees real run lengths and gradients."""
    return read_image(sorted((need(DATA / "mias") / "images").iterdir())[0])[0]


def _decode_cv2(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("filter", ["none", "up"])
def test_grey_masks_and_images_round_trip(filter):
    img = _mammogram()
    mask = cv2.compare(img, 128, cv2.CMP_GT)  # 0/255 with long runs, as the output masks
    for a in (img, mask, np.ascontiguousarray(img[::3, 1::2])):  # odd width, a non-contiguous source
        data = encode_png(a, filter)
        np.testing.assert_array_equal(_decode_cv2(data), a)
        with Image.open(io.BytesIO(data)) as im:
            assert im.mode == "L"
            np.testing.assert_array_equal(np.asarray(im), a)


def test_colour_is_bgr_for_opencv_and_rgb_for_pillow():
    img = _mammogram()
    bgr = np.dstack([img, img // 2, 255 - img])
    data = encode_png(bgr, "up")
    np.testing.assert_array_equal(_decode_cv2(data), bgr)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), bgr[:, :, ::-1])
    bgra = np.dstack([bgr, img])
    np.testing.assert_array_equal(_decode_cv2(encode_png(bgra)), bgra)


def test_sixteen_bit_is_big_endian_as_the_format_requires():
    a = (_mammogram().astype(np.uint16) * 257) ^ np.uint16(0x00F0)  # low byte differs from high byte
    for filter in ("none", "up"):
        out = _decode_cv2(encode_png(a, filter))
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, a)


def test_chunks_carry_valid_crcs():
    data = encode_png(_mammogram()[:64, :64])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, tags = 8, []
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        tag, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert int.from_bytes(data[pos + 8 + n:pos + 12 + n], "big") == zlib.crc32(tag + payload)
        tags.append(tag)
        pos += 12 + n
    assert tags == [b"IHDR", b"IDAT", b"IEND"]


def test_masks_are_smaller_with_none_and_gradients_with_up():
    img = _mammogram()
    mask = cv2.compare(img, 128, cv2.CMP_GT)
    assert len(encode_png(img, "up")) < len(encode_png(img, "none"))
    assert len(encode_png(mask, "none")) <= len(encode_png(mask, "up"))


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8),
                                 np.zeros((0, 4), np.uint8), np.zeros((2, 2, 2, 2), np.uint8)])
def test_arrays_png_cannot_hold_are_refused(bad, tmp_path):
    with pytest.raises(ValueError):
        encode_png(bad)
    with pytest.raises(OSError, match="bad.png"):
        atomic_write_png(tmp_path / "bad.png", bad)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(ValueError, match="filter"):
        encode_png(np.zeros((4, 4), np.uint8), "paeth")
