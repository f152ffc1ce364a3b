"Cube formats of other tools: real files written by HyperSpy/rosettasciio and astropy, read back through `load_cube`."
import subprocess, sys, shutil, warnings
from pathlib import Path
import numpy as np, pytest
from sediment_cluster.core import InputError
from sediment_cluster.cubes.datacube import iter_spectra, open_cube, read_cube
from sediment_cluster.cubes.formats import load_cube, quiet

hs = pytest.importorskip('hyperspy.api')
fits = pytest.importorskip('astropy.io.fits')
from astropy.wcs import WCS  # noqa: E402

EXE = shutil.which('sediment-cluster', path=str(Path(sys.executable).parent))
AXES = [('y', 7, .25, 0., 'µm', True), ('x', 5, .5, 2., 'µm', True), ('Energy', 48, .02, .1, 'keV', False)]

def one_line(call, *needles):
    "`call` raises a one-line InputError holding every needle; its message."
    with pytest.raises(InputError) as e: call()
    msg = str(e.value)
    assert '\n' not in msg and all(n in msg for n in needles), msg
    return msg

@pytest.fixture(scope='module')
def signal():
    data = np.random.default_rng(0).poisson(3, (7, 5, 48)).astype(np.uint16)
    axes = [dict(name=n, size=N, scale=s, offset=o, units=u, navigate=nav) for n, N, s, o, u, nav in AXES]
    with quiet():
        s = hs.signals.Signal1D(data, axes=axes)
        s.set_signal_type('EDS_SEM')
    return s

def save(signal, path):
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        signal.save(path, overwrite=True)
    return path

def check_cube(c, data):
    assert c.shape == (7, 5, 48) and (c.unit, c.quantity) == ('keV', 'energy')
    assert np.allclose(c.axis, .1 + .02 * np.arange(48))
    sp = c.meta['spatial']
    assert [a['scale'] for a in sp] == [.25, .5] and [a['offset'] for a in sp] == [0., 2.]
    assert [a['units'] for a in sp] in (['µm', 'µm'], ['um', 'um'])
    assert np.array_equal(np.concatenate([X for _, X in iter_spectra(c, 3)]), data.reshape(-1, 48))

@pytest.mark.parametrize('name', ['s.hspy', 's.rpl', 's.nxs', 's.emd'])
def test_hyperspy_written_files_read_back_with_axes_and_units(tmp_path, signal, name):
    c = load_cube(save(signal, tmp_path/name))
    check_cube(c, signal.data)
    assert type(c.data).__module__.startswith('dask')            # lazy: blocks read on demand
    assert np.array_equal(read_cube(tmp_path/name).data, signal.data)   # open_cube/read_cube dispatch here

def test_hspy_keeps_title_and_signal_type_and_loads_eagerly(tmp_path, signal):
    s = signal.deepcopy()
    s.metadata.General.title = 'painting'
    c = load_cube(save(s, tmp_path/'t.hspy'), lazy=False)
    assert isinstance(c.data, np.ndarray) and c.meta['title'] == 'painting' and c.meta['signal_type'] == 'EDS_SEM'

def test_raw_is_read_through_its_rpl(tmp_path, signal):
    save(signal, tmp_path/'s.rpl')
    check_cube(load_cube(tmp_path/'s.raw'), signal.data)

def test_hdf5_written_by_hyperspy_opens_under_h5_name(tmp_path, signal):
    save(signal, tmp_path/'s.hspy').rename(tmp_path/'s.h5')
    check_cube(open_cube(tmp_path/'s.h5'), signal.data)

def test_image_stack_with_energy_first_becomes_hwc(tmp_path, signal):
    with quiet(): stack = signal.as_signal2D((0, 1))      # (E | y, x): energy navigates
    check_cube(load_cube(save(stack, tmp_path/'stack.hspy')), signal.data)

# ---- FITS

def memory_mapped(a) -> bool:
    "Whether array `a` is a view of a memory-mapped file (astropy's memmap=True)."
    import mmap
    while isinstance(a, np.ndarray): a = a.base
    return isinstance(a, mmap.mmap)

def ifu_header(ctype='AWAV', cunit='Angstrom', crval=4750., cdelt=1.25, si=False):
    "A celestial + spectral header as instruments write it (CUNIT3 as given), or as wcslib normalises it (`si`)."
    w = WCS(naxis=3)
    w.wcs.ctype, w.wcs.cunit = ['RA---TAN', 'DEC--TAN', ctype], ['deg', 'deg', cunit]
    w.wcs.cdelt, w.wcs.crval, w.wcs.crpix = [-5.6e-5, 5.6e-5, cdelt], [150., 2., crval], [1, 1, 1]
    h = w.to_header()           # wcslib writes the spectral axis in SI units
    if not si: h['CUNIT3'], h['CDELT3'], h['CRVAL3'] = cunit, cdelt, crval
    return h

@pytest.fixture
def flux(): return np.random.default_rng(1).gamma(2, 1, (30, 6, 4)).astype(np.float32)   # (λ, y, x)

def test_fits_ifu_with_wcs_variance_and_mask(tmp_path, flux):
    h, dq = ifu_header(), (np.random.default_rng(2).random(flux.shape) < .1).astype(np.int16)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flux, h, name='DATA'), fits.ImageHDU(flux * .2, h, name='STAT'),
                  fits.ImageHDU(dq, name='DQ')]).writeto(tmp_path/'muse.fits')
    with load_cube(tmp_path/'muse.fits') as c:
        assert c.shape == (6, 4, 30) and (c.unit, c.quantity) == ('Å', 'wavelength') and c.meta['hdu'] == 'DATA'
        assert np.allclose(c.axis, 4750 + 1.25 * np.arange(30))
        assert np.array_equal(np.asarray(c.data), np.moveaxis(flux, 0, -1))
        assert np.allclose(np.asarray(c.variance), np.moveaxis(flux * .2, 0, -1))
        assert np.array_equal(np.asarray(c.mask), np.moveaxis(dq != 0, 0, -1))
        assert np.allclose([a['scale'] for a in c.meta['spatial']], .2016) and 'RA---TAN' in c.meta['wcs']
        assert memory_mapped(c.data)
    c = load_cube(tmp_path/'muse.fits', lazy=False, variance_hdu=False, mask_hdu='none')   # 'none': the CLI's word
    assert c.variance is None and c.mask is None and not memory_mapped(c.data)

@pytest.mark.parametrize('ext,factor', [('ERR', lambda f: f ** 2), ('IVAR', lambda f: 1 / f)])
def test_fits_errors_and_inverse_variances_become_variances(tmp_path, flux, ext, factor):
    fits.HDUList([fits.PrimaryHDU(flux, ifu_header()), fits.ImageHDU(flux, name=ext)]).writeto(tmp_path/'c.fits')
    c = load_cube(tmp_path/'c.fits', hdu=0)
    assert np.allclose(np.asarray(c.variance), np.moveaxis(factor(flux.astype('f8')), 0, -1))

def test_fits_wavelength_units_and_energy_axes(tmp_path, flux):
    fits.PrimaryHDU(flux, ifu_header('WAVE', 'um', 1.6, 0.001)).writeto(tmp_path/'nir.fits')
    c = load_cube(tmp_path/'nir.fits')
    assert (c.unit, c.quantity) == ('um', 'wavelength') and np.allclose(c.axis[:2], [1.6, 1.601])
    fits.PrimaryHDU(flux, ifu_header('ENER', 'keV', 0.5, 0.02)).writeto(tmp_path/'x.fits')
    c = load_cube(tmp_path/'x.fits')
    assert (c.unit, c.quantity) == ('keV', 'energy') and np.allclose(c.axis[:2], [.5, .52])
    fits.PrimaryHDU(flux, ifu_header(si=True)).writeto(tmp_path/'si.fits')   # SI metres in the header → Å
    assert load_cube(tmp_path/'si.fits').unit == 'Å' and np.isclose(load_cube(tmp_path/'si.fits').axis[0], 4750)

def test_fits_without_spectral_wcs_numbers_channels_and_hdu_by_name(tmp_path, flux):
    fits.HDUList([fits.PrimaryHDU(flux[:, :2, :2]), fits.ImageHDU(flux, name='SCI')]).writeto(tmp_path/'p.fits')
    assert load_cube(tmp_path/'p.fits').shape == (2, 2, 30)                # the first 3-D HDU
    c = load_cube(tmp_path/'p.fits', hdu='SCI')
    assert c.shape == (6, 4, 30) and c.unit == 'channel' and np.array_equal(c.axis, np.arange(30))
    assert load_cube(tmp_path/'p.fits', hdu='1').shape == (6, 4, 30)      # an index from the command line
    assert open_cube(tmp_path/'p.fits', hdu='SCI').shape == (6, 4, 30)    # open_cube passes format options on
    assert read_cube(tmp_path/'p.fits', hdu=1).shape == (6, 4, 30)
    one_line(lambda: load_cube(tmp_path/'p.fits', hdu='FLUX'), "no HDU 'FLUX'", 'SCI')

# ---- bad files: one line naming the file

def truncate(path, keep=.5):
    b = path.read_bytes()
    path.write_bytes(b[:int(len(b) * keep)])
    return path

def test_truncated_and_wrong_files_are_one_line(tmp_path, signal, flux):
    one_line(lambda: load_cube(truncate(save(signal, tmp_path/'t.hspy'))), 't.hspy', 'not a readable hspy file')
    save(signal, tmp_path/'r.rpl')
    truncate(tmp_path/'r.raw')
    one_line(lambda: load_cube(tmp_path/'r.rpl'), 'r.rpl', 'not a readable ripple file')
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flux, name='DATA'), fits.ImageHDU(flux, name='STAT')]
                 ).writeto(tmp_path/'t.fits')
    one_line(lambda: load_cube(truncate(tmp_path/'t.fits', .7)), 't.fits', 'truncated or damaged')
    for name in ('junk.fits', 'junk.nxs', 'junk.emd', 'junk.hspy', 'junk.bcf'):
        (tmp_path/name).write_bytes(b'\x00not a cube\x01' * 50)
        one_line(lambda: open_cube(tmp_path/name), name)
    fits.PrimaryHDU(flux[0]).writeto(tmp_path/'image.fits')
    one_line(lambda: load_cube(tmp_path/'image.fits'), 'image.fits', 'no 3-D image HDU')

def test_bcf_cannot_be_written_here_so_its_errors_and_options_are_checked(tmp_path, signal):
    "No library writes Bruker .bcf: what is tested is the message for a bad file and the option checks."
    (tmp_path/'scan.bcf').write_bytes(b'AID-CFB' + bytes(500))
    one_line(lambda: load_cube(tmp_path/'scan.bcf', downsample=2, cutoff_at_kV=20, detector=0), 'scan.bcf',
             'not a readable bruker file')
    save(signal, tmp_path/'s.hspy')
    one_line(lambda: load_cube(tmp_path/'s.hspy', downsample=2), 'downsample apply to .bcf files only')
    one_line(lambda: load_cube(tmp_path/'s.hspy', hdu=1), 'hdu apply to FITS files only')
    np.save(tmp_path/'c.npy', signal.data)
    one_line(lambda: open_cube(tmp_path/'c.npy', detector=1), 'c.npy', 'detector apply to .bcf files only')
    one_line(lambda: load_cube(tmp_path/'missing.bcf'), 'missing.bcf', 'no such cube file')

def test_missing_optional_dependency_names_the_extra(tmp_path, signal, monkeypatch):
    save(signal, tmp_path/'s.hspy')
    (tmp_path/'x.fits').write_bytes(b'SIMPLE')
    monkeypatch.setitem(sys.modules, 'rsciio.hspy', None)
    monkeypatch.setitem(sys.modules, 'astropy.io.fits', None)
    one_line(lambda: load_cube(tmp_path/'s.hspy'), 's.hspy', 'rosettasciio', "pip install 'sediment_cluster[formats]'")
    one_line(lambda: load_cube(tmp_path/'x.fits'), 'astropy', '[formats]')

def test_zspy_is_refused_in_one_line(tmp_path):
    (tmp_path/'z.zspy').mkdir()
    one_line(lambda: load_cube(tmp_path/'z.zspy'), 'z.zspy')

# ---- the command line reads these formats without new flags

def run(*args): return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=600)

def test_cli_train_and_segment_on_hspy_and_fits(tmp_path):
    rng = np.random.default_rng(3)
    lab = np.repeat(np.arange(3), 16 * 16 // 3 + 1)[:256].reshape(16, 16)
    means = rng.gamma(2, 2, (3, 64))
    data = rng.poisson(means[lab]).astype(np.float32)
    with quiet(): s = hs.signals.Signal1D(data)
    save(s, tmp_path/'c.hspy')
    fits.PrimaryHDU(np.moveaxis(data, -1, 0), ifu_header()).writeto(tmp_path/'c.fits')
    for cube in ('c.hspy', 'c.fits'):
        r = run('train-spectral', tmp_path/cube, '--out', tmp_path/'m.pt', '--epochs', '2', '--k-max', '4')
        assert r.returncode == 0, r.stderr
        r = run('segment', tmp_path/cube, '--model', tmp_path/'m.pt', '--out', tmp_path/'seg.npy',
                '--k-range', '2', '4')
        assert r.returncode == 0, r.stderr
        assert np.load(tmp_path/'seg.npy').shape == (16, 16)
    (tmp_path/'bad.fits').write_bytes(b'SIMPLE  =   nonsense')
    r = run('segment', tmp_path/'bad.fits', '--model', tmp_path/'m.pt', '--out', tmp_path/'x.npy')
    assert r.returncode == 2 and 'Traceback' not in r.stderr and 'bad.fits' in r.stderr.strip().splitlines()[-1]

# ---- HyperSpy interop, cluster outputs, writers

from types import SimpleNamespace  # noqa: E402
from sediment_cluster.cubes.datacube import Datacube  # noqa: E402
from sediment_cluster.cubes.formats import (cluster_outputs, plot_cluster_results, read_map, write_cluster_spectra,  # noqa: E402
                                            write_fits_labels, write_map)

def test_hyperspy_round_trip_keeps_axes_units_and_variance(tmp_path, signal):
    s = signal.deepcopy()
    s.estimate_poissonian_noise_variance()
    c = Datacube.from_hyperspy(s)
    check_cube(c, signal.data)
    assert c.variance is not None and c.meta['signal_type'] == 'EDS_SEM'
    back = c.to_hyperspy()
    assert back.data.shape == signal.data.shape and np.array_equal(back.data, signal.data)
    for a, b in zip(back.axes_manager._get_axes_in_natural_order(), signal.axes_manager._get_axes_in_natural_order()):
        assert (a.name, a.units, a.size) == (b.name, b.units, b.size) and np.isclose(a.scale, b.scale) \
            and np.isclose(a.offset, b.offset)
    assert back.metadata.Signal.signal_type == 'EDS_SEM'
    var = lambda sig: sig.metadata.Signal.Noise_properties.variance.data
    assert np.allclose(var(back), var(s))
    lazy = load_cube(save(signal, tmp_path/'s.hspy')).to_hyperspy()
    assert lazy._lazy and np.array_equal(lazy.data.compute(), signal.data)

def test_image_stack_signal_becomes_a_cube(signal):
    with quiet(): stack = signal.as_signal2D((0, 1))
    check_cube(Datacube.from_hyperspy(stack), signal.data)

def stripes():
    rng = np.random.default_rng(4)
    lab = np.repeat(np.arange(3), 4)[:, None].repeat(5, 1)
    spectra = np.array([[9., 1, 1, 1], [1, 9, 1, 1], [1, 1, 1, 9]]) * 10
    return Datacube(rng.poisson(spectra[lab]).astype(np.float32), np.arange(1., 5), 'keV'), lab

def test_cluster_outputs_in_spectra_and_in_a_latent_space(tmp_path):
    cube, lab = stripes()
    out = cluster_outputs(cube, lab, chunk_rows=5)
    assert list(out.counts) == [20, 20, 20] and out.masks.shape == (3, 12, 5)
    assert np.array_equal(out.distances.argmin(0), lab)
    assert np.allclose(out.sum_spectra, [cube.data[lab == k].sum(0) for k in range(3)])
    Z = np.stack([lab, -lab], -1).astype(float) + .01 * np.random.default_rng(0).random((12, 5, 2))
    seg = SimpleNamespace(labels=lab, centres=np.array([[0., 0], [1, -1], [2, -2]]), latent=Z)
    out = cluster_outputs(cube, seg)
    assert out.distances.shape == (3, 12, 5) and np.array_equal(out.distances.argmin(0), lab)
    for k in range(3):   # the centroid is the spectrum of the pixel nearest the latent centre
        i = np.unravel_index(np.argmin(np.where(lab == k, out.distances[k], np.inf)), lab.shape)
        assert np.array_equal(out.centroid_spectra[k], cube.data[i])
    with pytest.raises(InputError, match='shape'): cluster_outputs(cube, lab[:5])
    plot_cluster_results(out, 'centroid')

def test_maps_round_trip_with_scale(tmp_path, signal):
    c = load_cube(save(signal, tmp_path/'s.hspy'))
    lab = np.random.default_rng(0).integers(-1, 4, (7, 5))
    for name in ('l.tif', 'l.tiff', 'l.png'):
        a, meta = read_map(write_map(tmp_path/name, lab, c))
        assert np.array_equal(a, lab) and meta == {'scale': [.25, .5], 'unit': 'µm'}
    import tifffile
    with tifffile.TiffFile(tmp_path/'l.tif') as t:
        tags = t.pages[0].tags
        assert tags['ResolutionUnit'].value == 3                        # centimetre
        xres = tags['XResolution'].value
        assert np.isclose(xres[0] / xres[1], 1e4 / .5)                 # 0.5 µm pixels
    from PIL import Image
    with Image.open(tmp_path/'l.png') as im: assert np.isclose(im.info['dpi'][0], 2.54e4 / .5, rtol=1e-3)
    d = np.random.default_rng(1).random((3, 7, 5)).astype(np.float32)
    a, meta = read_map(write_map(tmp_path/'d.tif', d, scale=2., unit='arcsec'))
    assert np.array_equal(a, d) and meta == {'scale': [2., 2.], 'unit': 'arcsec'}
    one_line(lambda: write_map(tmp_path/'d.png', d), 'PNG holds one label map')
    one_line(lambda: write_map(tmp_path/'d.jpg', lab), "extension='.jpg'")

def test_cluster_spectra_csv_and_msa_round_trip(tmp_path):
    import pandas as pd, rsciio.msa
    cube, lab = stripes()
    out = cluster_outputs(cube, lab)
    df = pd.read_csv(write_cluster_spectra(tmp_path/'s.csv', out, 'centroid')[0])
    assert list(df.columns) == ['energy (keV)', 'cluster_0', 'cluster_1', 'cluster_2']
    assert np.allclose(df.iloc[:, 1:].to_numpy().T, out.centroid_spectra) and np.allclose(df.iloc[:, 0], cube.axis)
    files = write_cluster_spectra(tmp_path/'s.msa', out)
    assert [f.name for f in files] == ['s_0.msa', 's_1.msa', 's_2.msa']
    for k, f in enumerate(files):
        d = rsciio.msa.file_reader(str(f))[0]
        assert np.allclose(d['data'], out.mean_spectra[k]) and d['axes'][0]['units'] == 'keV'
        assert np.isclose(d['axes'][0]['offset'], 1) and np.isclose(d['axes'][0]['scale'], 1)
    out.axis = np.array([1., 2, 4, 8])                              # EMSA holds evenly spaced channels only
    one_line(lambda: write_cluster_spectra(tmp_path/'n.msa', out), 'n.msa', 'evenly spaced', '.csv')
    assert pd.read_csv(write_cluster_spectra(tmp_path/'n.csv', out)[0]).iloc[:, 0].tolist() == [1, 2, 4, 8]

def test_fits_label_map_keeps_the_celestial_wcs(tmp_path, flux):
    fits.HDUList([fits.PrimaryHDU(flux, ifu_header())]).writeto(tmp_path/'c.fits')
    cube = load_cube(tmp_path/'c.fits')
    lab = np.random.default_rng(0).integers(-1, 3, (6, 4))
    with fits.open(write_fits_labels(tmp_path/'l.fits', lab, cube)) as f:
        assert np.array_equal(f[0].data, lab) and f[0].data.dtype.kind == 'i'
        w2, w3 = WCS(f[0].header), WCS(fits.getheader(tmp_path/'c.fits')).celestial
        assert w2.naxis == 2 and np.allclose(w2.pixel_to_world_values(2, 5), w3.pixel_to_world_values(2, 5))
    with fits.open(write_fits_labels(tmp_path/'plain.fits', lab)) as f: assert np.array_equal(f[0].data, lab)

def test_bcf_options_reach_rosettasciio_and_the_eds_cube_is_picked(tmp_path, monkeypatch):
    """No .bcf can be written here: rosettasciio's Bruker reader is replaced by one returning what it returns for a
    map (the SEM image, then the EDS spectrum image), to check the options passed and the cube chosen."""
    import rsciio.bruker
    seen = {}
    eds = np.arange(4 * 3 * 10, dtype=np.uint16).reshape(4, 3, 10)
    axes = [dict(name='height', size=4, scale=2., offset=0., units='µm', navigate=True),
            dict(name='width', size=3, scale=2., offset=0., units='µm', navigate=True),
            dict(name='Energy', size=10, scale=.01, offset=-.47, units='keV', navigate=False)]
    def reader(filename, **kw):
        seen.update(kw, filename=filename)
        return [{'data': eds.sum(-1), 'axes': axes[:2], 'metadata': {'General': {'title': 'SEM'}}},
                {'data': eds, 'axes': axes,
                 'metadata': {'General': {'title': 'EDX'}, 'Signal': {'signal_type': 'EDS_SEM'}}}]
    monkeypatch.setattr(rsciio.bruker, 'file_reader', reader)
    (tmp_path/'map.bcf').write_bytes(b'stand-in')
    c = load_cube(tmp_path/'map.bcf', downsample=2, cutoff_at_kV=15., detector=1)
    assert {k: seen[k] for k in ('lazy', 'select_type', 'index', 'downsample', 'cutoff_at_kV')} == \
        {'lazy': True, 'select_type': 'spectrum_image', 'index': 1, 'downsample': 2, 'cutoff_at_kV': 15.}
    assert np.array_equal(c.data, eds) and c.unit == 'keV' and np.isclose(c.axis[0], -.47)
    assert c.meta['title'] == 'EDX' and c.meta['signal_type'] == 'EDS_SEM'
    assert open_cube(tmp_path/'map.bcf', signal='EDX').shape == (4, 3, 10)

def test_cli_read_options_choose_the_fits_hdu(tmp_path):
    "`--read hdu=NAME` reaches the reader in both train-spectral and segment: the second cube has other channels."
    rng = np.random.default_rng(5)
    first = rng.poisson(4, (32, 16, 16)).astype(np.float32)
    second = rng.poisson(np.repeat(rng.gamma(2, 2, (2, 48)), 128, axis=0)).astype(np.float32).reshape(16, 16, 48)
    fits.HDUList([fits.PrimaryHDU(first, ifu_header()),
                  fits.ImageHDU(np.moveaxis(second, -1, 0), ifu_header(), name='SCI2')]).writeto(tmp_path/'two.fits')
    r = run('train-spectral', tmp_path/'two.fits', '--out', tmp_path/'m.pt', '--epochs', '2', '--k-max', '3',
            '--read', 'hdu=SCI2')
    assert r.returncode == 0, r.stderr
    r = run('segment', tmp_path/'two.fits', '--model', tmp_path/'m.pt', '--out', tmp_path/'seg.npy',
            '--k-range', '2', '3', '--read', 'hdu=SCI2')
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path/'seg.npy').shape == (16, 16)
    r = run('segment', tmp_path/'two.fits', '--model', tmp_path/'m.pt', '--out', tmp_path/'x.npy',
            '--k-range', '2', '3')
    assert r.returncode == 2 and 'Traceback' not in r.stderr      # the primary HDU has 32 channels, the model 48
    r = run('segment', tmp_path/'two.fits', '--model', tmp_path/'m.pt', '--out', tmp_path/'x.npy', '--read', 'hdu')
    assert r.returncode == 2 and 'key=value' in r.stderr
