"Synthetic cubes: `synth_cube` writes its files, results are reproducible from the seed, bad inputs fail in one line."
import json
import numpy as np, pytest
from sediment_cluster.core import InputError, read_image, write_image
from sediment_cluster.cubes.datacube import read_cube
from sediment_cluster.cubes.synth import synth_cube
from sediment_cluster.cubes.synth_xrf import (xrf_cube_from_rgb, pigment_spectrum, energy_axis, load_pigments,
                                              sample_counts)
from sediment_cluster.cubes.synth_astro import astro_cube_from_rgb, nebula_seed, above_kauffmann, draw_line_ratios

def _written(paths):
    return {k: p.exists() for k, p in paths.items()}

def test_xrf_writes_cube_labels_rgb_info(tmp_path):
    paths = synth_cube('xrf', tmp_path/'xrf', n_channels=128, counts_per_pixel=100, size=32)
    assert all(_written(paths).values()) and paths['cube'].suffix == '.h5'
    cube = read_cube(paths['cube'])
    labels = np.load(paths['labels'])
    info = json.loads(paths['info'].read_text())
    assert cube.shape == (32, 32, 128) and cube.unit == 'keV' and cube.data.dtype == np.uint16
    assert labels.shape == (32, 32) and labels.max() + 1 == info['k'] == len(info['mixtures'])
    assert read_image(paths['rgb']).shape == (32, 32, 3)
    assert abs(cube.data.sum(-1).mean() - 100) < 3

@pytest.mark.filterwarnings('ignore:IKMeans')
def test_xrf_from_an_image_file_with_resize(tmp_path):
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30] = (240, 235, 229)
    img[:, 30:] = (36, 81, 156)
    write_image(tmp_path/'seed.png', img)
    paths = synth_cube('xrf', tmp_path/'out.npy', rgb=tmp_path/'seed.png', size=30, n_channels=64, k_range=(2, 3))
    labels = np.load(paths['labels'])
    assert labels.shape == (20, 30) and len(np.unique(labels)) == 2
    assert read_cube(paths['cube']).shape == (20, 30, 64)
    mixes = json.loads(paths['info'].read_text())['mixtures']
    assert {'lead white', 'azurite'} <= {n for m in mixes for n in m}

def test_astro_writes_wavelength_cube(tmp_path):
    paths = synth_cube('astro', tmp_path/'a.zarr', step=5, size=24)
    cube = read_cube(paths['cube'])
    assert cube.quantity == 'wavelength' and cube.unit == 'Å' and cube.shape[:2] == (24, 24)
    assert set(np.unique(np.load(paths['labels']))) <= {0, 1, 2, 3}

@pytest.mark.parametrize('kind', ['xrf', 'astro'])
def test_reproducible_from_seed(tmp_path, kind):
    a = synth_cube(kind, tmp_path/'a.h5', size=24, n_channels=64, step=5, random_state=7)
    b = synth_cube(kind, tmp_path/'b.h5', size=24, n_channels=64, step=5, random_state=7)
    c = synth_cube(kind, tmp_path/'c.h5', size=24, n_channels=64, step=5, random_state=8)
    A, B, C = (read_cube(p['cube']).data for p in (a, b, c))
    assert np.array_equal(A, B) and not np.array_equal(A, C)
    assert np.array_equal(np.load(a['labels']), np.load(b['labels']))

@pytest.mark.parametrize('call,needle', [
    (lambda p: synth_cube('radio', p/'x'), "kind='radio': choose one of 'xrf', 'astro'"),
    (lambda p: synth_cube('xrf', p/'x.fits'), "unknown cube extension '.fits'"),
    (lambda p: synth_cube('xrf', p/'x.h5', rgb=p/'missing.png'), 'missing.png: no such file'),
    (lambda p: xrf_cube_from_rgb(np.zeros((4, 4), np.uint8)), 'H×W×3 uint8'),
    (lambda p: xrf_cube_from_rgb(np.zeros((8, 8, 3), np.uint8), counts_per_pixel=0), 'positive counts'),
    (lambda p: pigment_spectrum('mauve'), "unknown pigment 'mauve'"),
    (lambda p: pigment_spectrum({'Fe': 1, 'Qq': 1}), "unknown element 'Qq'"),
])
def test_bad_inputs_are_one_line_input_errors(tmp_path, call, needle):
    with pytest.raises(InputError) as e: call(tmp_path)
    assert needle in str(e.value) and '\n' not in str(e.value)

def test_palette_is_packaged_and_physical():
    P = load_pigments()
    assert len(P) >= 15 and all(abs(sum(e.values()) - 1) < 1e-3 for e in P.elements)
    E = energy_axis(1024)
    for name, line in [('red ochre', 6.40), ('malachite', 8.04), ('chalk', 3.69)]:   # Fe, Cu, Ca Kα
        assert abs(E[pigment_spectrum(name, E).argmax()] - line) <= E[1] - E[0]

def test_astro_ratios_follow_bpt_classes():
    sc = astro_cube_from_rgb(nebula_seed(32, 1), step=5, random_state=1)
    d = sc.info['ratios']
    above = above_kauffmann(d.x, d.y)
    assert not above[d.cls == 'HII'].any() and above[d.cls != 'HII'].all()
    s2 = (d['[SII]6716'] + d['[SII]6731']) / d['Hα']
    assert (s2[d.cls == 'shock'] > 0.4).all() and (s2[d.cls != 'shock'] < 0.4).all()

def test_random_state_takes_a_seed_or_a_generator():
    "`random_state` (was `rng`) accepts an int or a Generator; the same seed gives the same stream."
    P, lab = np.full((2, 16), 1 / 16), np.array([0, 1, 1, 0])
    assert np.array_equal(sample_counts(P, lab, 50, 3), sample_counts(P, lab, 50, np.random.default_rng(3)))
    assert draw_line_ratios('PN', 5, 4).equals(draw_line_ratios('PN', 5, random_state=np.random.default_rng(4)))
