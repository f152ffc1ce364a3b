"Property tests of the image loaders: random bytes, random shapes and channel counts, random bit depths."
import tempfile
from pathlib import Path

import cv2
import numpy as np
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from sediment_cluster.core import InputError, bit_depth, read_image, read_stack

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DIR = Path(tempfile.mkdtemp(prefix='s16_fuzz_'))


def ok_or_input_error(read):
    "`read()` gives an H×W×3 uint8 array or a one-line `InputError` — nothing else."
    try: out = read()
    except InputError as e:
        assert '\n' not in str(e)
        return None
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    return out


@SETTINGS
@given(st.binary(max_size=600), st.sampled_from(['.png', '.jpg', '.jpeg', '.tif', '.tiff']),
       st.sampled_from([b'', b'\x89PNG\r\n\x1a\n', b'\xff\xd8\xff', b'II*\x00', b'MM\x00*']))
def test_random_bytes(data, ext, head):
    p = DIR/f'r{ext}'
    p.write_bytes(head + data)
    ok_or_input_error(lambda: read_image(p))


@SETTINGS
@given(st.binary(min_size=1, max_size=400), st.integers(0, 10**6))
def test_damaged_real_files(noise, seed):
    "A real PNG/JPEG/TIFF with bytes overwritten or cut: read, or refused in one line."
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (int(rng.integers(1, 30)), int(rng.integers(1, 30)), 3), dtype=np.uint8)
    ext = ['.png', '.jpg', '.tif'][seed % 3]
    ok, buf = cv2.imencode(ext, img)
    b = bytearray(buf.tobytes())
    at = int(rng.integers(0, len(b)))
    b[at:at + len(noise)] = noise
    if seed % 2: b = b[:int(rng.integers(1, len(b) + 1))]
    p = DIR/f'd{ext}'
    p.write_bytes(bytes(b))
    ok_or_input_error(lambda: read_image(p))


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from([None, 1, 2, 3, 4]),
       st.sampled_from([8, 10, 12, 14, 16]), st.sampled_from(['.png', '.tif']), st.integers(0, 10**6))
def test_shapes_channels_and_bit_depths(h, w, c, bits, ext, seed):
    "Any grey/grey+alpha/RGB/RGBA image of 8–16 bits reads as H×W×3 uint8 scaled by its bit depth."
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits == 8 else np.uint16
    shape = (h, w) if c is None else (h, w, c)
    img = rng.integers(0, 2 ** bits, shape, dtype=np.int64).astype(dtype)
    img.flat[0] = 2 ** bits - 1   # the depth is read off the largest value
    p = DIR/f's{ext}'
    try: written = cv2.imwrite(str(p), img)
    except cv2.error: written = False
    assume(written)   # OpenCV writes no 2-channel files: those come from other programs
    raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    out = ok_or_input_error(lambda: read_image(p))
    assert out is not None and out.shape == (h, w, 3)
    assert bit_depth(raw) == bits
    grey = raw if raw.ndim == 2 else raw[..., 0]
    expect = np.clip(grey.astype(np.float64) * 255 / (2 ** bits - 1) + .5, 0, 255).astype(np.uint8)
    channel = 0 if raw.ndim == 2 or raw.shape[2] <= 2 else 2   # OpenCV's BGR: the file's first channel is blue
    assert np.abs(out[..., channel].astype(int) - expect.astype(int)).max() <= 1


@SETTINGS
@given(st.lists(st.sampled_from([8, 12, 16]), min_size=1, max_size=4), st.integers(0, 10**6))
def test_stack_uses_one_depth(depths, seed):
    "The 16-bit layers of a stack are scaled by one depth (the deepest), so their relative brightness is kept."
    rng = np.random.default_rng(seed)
    d = Path(tempfile.mkdtemp(dir=DIR))
    raws = []
    for i, bits in enumerate(depths):
        a = rng.integers(0, 2 ** bits, (6, 7, 3), dtype=np.int64)
        a.flat[0] = 2 ** bits - 1
        raws.append(a.astype(np.uint8 if bits == 8 else np.uint16))
        cv2.imwrite(str(d/f'l{i}.png'), raws[-1])
    s = read_stack(d)
    top = max(depths)
    assert s.bit_depth == top and s.layers.shape == (len(depths), 6, 7, 3)
    for raw, layer in zip(raws, s.layers):
        scale = 1 if raw.dtype == np.uint8 else 255 / (2 ** top - 1)   # an 8-bit file is as it is
        expect = np.clip(raw[..., ::-1].astype(np.float64) * scale + .5, 0, 255)
        assert np.abs(layer.astype(int) - expect.astype(int)).max() <= 1


def test_twelve_bit_particle_is_not_lost(tmp_path):
    "12-bit data in a 16-bit file (the issue's case): a mid-grey grain stays mid-grey, not black."
    img = np.full((20, 20, 3), 600, np.uint16)
    img[5:15, 5:15] = 3000
    cv2.imwrite(str(tmp_path/'a.png'), img)
    out = read_image(tmp_path/'a.png')
    assert out[10, 10, 0] == round(3000 * 255 / 4095) and out[0, 0, 0] == round(600 * 255 / 4095)


def test_random_bytes_are_not_called_truncated(tmp_path):
    "Random bytes named .png (the issue's case) are 'not an image', not a 'truncated' one."
    import pytest
    p = tmp_path/'x.png'
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(InputError, match=r'x.png: not an image \(its first bytes are no PNG, JPEG or TIFF signature\)'):
        read_image(p)
