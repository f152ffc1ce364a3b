"Cube files: round trips through .npy, HDF5 and zarr, lazy chunked reading, and bad inputs as one-line errors."
import warnings
import h5py, numpy as np, pytest
from sediment_cluster.core import InputError
from sediment_cluster.cubes.datacube import (SpectraPreprocessor, open_cube, read_cube, write_cube,
                                   iter_spectra, integrate, rebin, rebin_axis)

FORMATS = ['c.npy', 'c.h5', 'c.hdf5', 'c.zarr']

@pytest.fixture
def cube():
    return np.random.default_rng(0).poisson(4, (9, 6, 50)).astype(np.uint16)

@pytest.mark.parametrize('name', FORMATS)
def test_round_trip_keeps_pixels_dtype_and_axis(tmp_path, cube, name):
    E = np.linspace(0.5, 38.5, 50)
    back = read_cube(write_cube(tmp_path/name, cube, E))
    assert back.data.dtype == np.uint16 and np.array_equal(back.data, cube)
    assert np.allclose(back.axis, E) and (back.unit, back.quantity) == ('keV', 'energy')

@pytest.mark.parametrize('name', FORMATS)
def test_round_trip_without_axis_numbers_channels(tmp_path, cube, name):
    back = read_cube(write_cube(tmp_path/name, cube.astype(np.float32)))
    assert back.unit == 'channel' and np.array_equal(back.axis, np.arange(50)) and back.data.dtype == np.float32

@pytest.mark.parametrize('name', FORMATS)
def test_wavelength_axis_keeps_unit(tmp_path, cube, name):
    back = read_cube(write_cube(tmp_path/name, cube, np.linspace(4750, 9350, 50), 'Å', 'wavelength'))
    assert (back.unit, back.quantity) == ('Å', 'wavelength')

@pytest.mark.parametrize('name', FORMATS)
def test_overwrite_replaces_and_leaves_no_temporaries(tmp_path, cube, name):
    write_cube(tmp_path/name, cube)
    write_cube(tmp_path/name, cube[:4])
    assert read_cube(tmp_path/name).shape == (4, 6, 50)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]

def test_lazy_open_and_chunked_iteration(tmp_path, cube):
    write_cube(tmp_path/'c.h5', cube, chunk_rows=4)
    with open_cube(tmp_path/'c.h5') as lazy:
        assert isinstance(lazy.data, h5py.Dataset)
        blocks = list(iter_spectra(lazy, chunk_rows=4))
        assert [b.stop - b.start for b, _ in blocks] == [4, 4, 1]
        assert np.array_equal(np.concatenate([X for _, X in blocks]), cube.reshape(-1, 50))
        assert np.array_equal(integrate(lazy, 2), cube.sum(-1))
    npy = open_cube(write_cube(tmp_path/'c.npy', cube))
    assert isinstance(npy.data, np.memmap)

def test_h5_from_other_tools_with_wavelength_dataset(tmp_path, cube):
    with h5py.File(tmp_path/'muse.h5', 'w') as f:
        f['img'] = cube
        f['wavelength'] = np.linspace(4750, 9350, 50)
    c = read_cube(tmp_path/'muse.h5')
    assert c.quantity == 'wavelength' and c.unit == 'Å'

def test_convert_lazily_between_formats(tmp_path, cube):
    write_cube(tmp_path/'a.h5', cube, np.arange(50.) + 1)
    with open_cube(tmp_path/'a.h5') as lazy: write_cube(tmp_path/'b.zarr', lazy, chunk_rows=2)
    b = read_cube(tmp_path/'b.zarr')
    assert np.array_equal(b.data, cube) and np.allclose(b.axis, np.arange(50.) + 1)

@pytest.mark.parametrize('make,call,needle', [
    (None, lambda p: open_cube(p/'cube.tif'), "unknown cube extension '.tif'"),
    (None, lambda p: write_cube(p/'cube.fits', np.zeros((2, 2, 2))), "'.fits' to write (.fits is read only)"),
    (None, lambda p: open_cube(p/'missing.h5'), 'no such cube file'),
    (None, lambda p: write_cube(p/'flat.h5', np.zeros((4, 5))), 'must be 3-D (H, W, C)'),
    (None, lambda p: write_cube(p/'x.npy', np.zeros((2, 3, 4, 5))), 'must be 3-D (H, W, C)'),
    (None, lambda p: write_cube(p/'x.h5', np.zeros((2, 3, 4)), np.arange(5)), '5 values but the cube has 4 channels'),
    ('noimg', lambda p: open_cube(p/'noimg.h5'), "no dataset 'img' (found: cube 2×2×2)"),
    ('junk', lambda p: open_cube(p/'junk.h5'), 'not a readable HDF5 file'),
    ('flatnpy', lambda p: open_cube(p/'flat.npy'), 'must be 3-D'),
    ('flatnpy', lambda p: open_cube(p/'flat.npy'), 'flat.npy'),
])
def test_bad_inputs_are_one_line_input_errors(tmp_path, make, call, needle):
    if make == 'noimg':
        with h5py.File(tmp_path/'noimg.h5', 'w') as f: f['cube'] = np.zeros((2, 2, 2))
    if make == 'junk': (tmp_path/'junk.h5').write_bytes(b'not hdf5')
    if make == 'flatnpy': np.save(tmp_path/'flat.npy', np.zeros((4, 5)))
    with pytest.raises(InputError) as e: call(tmp_path)
    assert needle in str(e.value) and '\n' not in str(e.value)

def test_foreign_hdf5_names_its_datasets_and_the_conversion(tmp_path):
    with h5py.File(tmp_path/'x.h5', 'w') as f:
        f['data/spectra'] = np.arange(24.).reshape(2, 3, 4)
        f['energy_keV'] = np.arange(4.)
    with pytest.raises(InputError) as e: open_cube(tmp_path/'x.h5')
    msg = str(e.value)
    assert "no dataset 'img' (found: data/spectra 2×3×4, energy_keV 4)" in msg and '\n' not in msg
    assert f"write_cube('{tmp_path}/x_cube.h5', h5py.File('{tmp_path}/x.h5')['data/spectra'][...], energy)" in msg
    import h5py as h5py_, numpy as np_  # the printed conversion works as written
    back = eval(msg.split('convert with ')[1], {'write_cube': write_cube, 'h5py': h5py_, 'np': np_, 'energy': None})
    assert np.array_equal(read_cube(back).data, np.arange(24.).reshape(2, 3, 4))

@pytest.mark.parametrize('kind', ['plain', 'group'])
def test_zarr_without_img_says_the_layout_and_the_conversion(tmp_path, kind):
    import zarr
    a = np.random.default_rng(0).poisson(3, (3, 4, 5)).astype(np.uint16)
    if kind == 'plain': zarr.save_array(tmp_path/'c.zarr', a)
    else: zarr.open_group(tmp_path/'c.zarr', mode='w').create_array('cube', data=a)
    with pytest.raises(InputError) as e: open_cube(tmp_path/'c.zarr')
    msg = str(e.value)
    found = 'a plain zarr array 3×4×5' if kind == 'plain' else 'cube 3×4×5'
    assert f"no array 'img' (found: {found})" in msg and "as array 'img' (+ optional 1-D 'energy')" in msg
    assert '\n' not in msg
    back = eval(msg.split('convert with ')[1], {'write_cube': write_cube, 'zarr': zarr, 'energy': None})
    assert np.array_equal(read_cube(back).data, a)

def test_rebin_preserves_counts_for_any_channel_count():
    X = np.random.default_rng(1).poisson(7, (5, 4093)).astype(float)
    for n in (1, 7, 1000, 1024, 4093):
        assert rebin(X, n).shape == (5, n) and np.allclose(rebin(X, n).sum(1), X.sum(1))
    assert np.allclose(rebin_axis(np.arange(10.), 3), [1.5, 5, 8])

def test_preprocessor_bad_channels_rank_and_unfitted():
    X = np.ones((4, 20))
    pp = SpectraPreprocessor(n_bins=5).fit(X)
    for bad, needle in [(np.ones((4, 21)), 'X has 21 features, but SpectraPreprocessor is expecting 20'),
                        (np.ones((2, 4, 20)), 'must be a 2-D N×C array')]:
        with pytest.raises(InputError, match=needle.replace('(', r'\(')): pp.transform(bad)
    with pytest.raises(InputError, match='call fit'): SpectraPreprocessor().transform(X)

def test_preprocessor_counts_bad_values_and_zero_spectra():
    X = np.full((3, 8), 2.0)
    X[0, 0] = np.nan
    X[0, 1] = -np.inf
    X[1, 2] = -3
    X[2] = 0
    with pytest.warns(UserWarning) as w:
        pp = SpectraPreprocessor().fit(X)
        Y = pp.transform(X)
    assert (pp.n_nonfinite_, pp.n_negative_, pp.n_zero_spectra_) == (2, 1, 1)
    assert np.isfinite(Y).all() and np.allclose(Y[:2].max(1), 1) and (Y[2] == 0).all()
    assert any('all-zero' in str(m.message) for m in w)

def test_preprocessor_passes_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        checks = check_estimator(SpectraPreprocessor(n_bins=None, log1p=True), on_fail=None)
        failed = [r['check_name'] for r in checks if r['status'] == 'failed']
    assert failed == []

@pytest.mark.parametrize('kw', [dict(n_bins=97, log1p=True), dict(n_bins=256),
                                dict(normalize='poisson', stabilize='anscombe'),
                                dict(channel_range='auto', n_bins=128, normalize='total', stabilize='sqrt')])
@pytest.mark.parametrize('dtype', [np.uint16, np.float32, np.float64])
def test_preprocessor_float32_default_matches_float64(kw, dtype):
    X = np.random.default_rng(8).poisson(np.linspace(1, 60, 1024), (40, 1024)).astype(dtype)
    pp = SpectraPreprocessor(**kw).fit(X)
    Y32, Y64 = pp.transform(X), pp.transform(X, dtype=np.float64)
    assert Y32.dtype == np.float32 and Y64.dtype == np.float64
    assert np.allclose(Y32, Y64, rtol=1e-5, atol=1e-6 * np.abs(Y64).max())
