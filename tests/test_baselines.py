("The baseline guard: PCA + k-means at the deep k in every segmentation, both silhouettes in its PCA space, a one-line "
 "warning and the baseline's labels when it scores better; the JSON and label files of `segment_file`.")
import json, warnings
import numpy as np, pytest
from sediment_cluster.core import InputError
from sediment_cluster.cubes.baselines import (BaselineWarning, PCAKMeans, PoissonPCA, compare_with_baseline)
from sediment_cluster.cubes.deepcluster import DeepSpectralClustering
from sediment_cluster.cubes.datacube import write_cube
from sediment_cluster.cubes.segment import segment, segment_file
from sediment_cluster.cubes.synth_xrf import xrf_cube_from_rgb, demo_rgb
from sediment_cluster.metrics import ari

@pytest.fixture(scope='module')
def lowcount():
    "A low-count XRF cube (200 photons per pixel over 256 channels, pigments mixed per pixel), 4 classes."
    return xrf_cube_from_rgb(demo_rgb('rocket', 32), n_channels=256, counts_per_pixel=200, k_range=(4, 4),
                             mixing=0.05, count_spread=0.3, random_state=0)

@pytest.fixture(scope='module')
def weak(lowcount):
    "A model that learned nothing: 20 steps, no clustering term."
    return DeepSpectralClustering(latent=4, max_steps=20, clustering=None, verbose=False,
                                  random_state=0).fit(lowcount.cube.reshape(-1, 256))

def test_poisson_pca_equalises_channel_noise():
    rng = np.random.default_rng(0)
    X = rng.poisson(np.r_[np.full(10, 100.), np.full(10, 1.)], (4000, 20)).astype(float)
    p = PoissonPCA(3).fit(X)
    v = p._normalise(X).var(0)
    assert p.poisson_ and abs(v[:10].mean() / v[10:].mean() - 1) < 0.2
    assert not PoissonPCA().fit(X - 3).poisson_
    with pytest.raises(InputError, match='10 channels but the baseline was fitted on 20'):
        PoissonPCA().fit(X).transform(X[:, :10])

def test_the_same_labelling_is_not_flagged(lowcount):
    X = lowcount.cube.reshape(-1, 256)
    base = PCAKMeans(4).fit(X)
    chk, _ = compare_with_baseline(X, base.transform(X), base.labels_)
    assert not chk.baseline_better and chk.agreement_ari > 0.99 and chk.silhouette_deep == chk.silhouette_baseline

def test_weak_model_is_flagged_with_one_line_and_labels(lowcount, weak):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        seg = segment(lowcount, weak, k_range=(4, 4), progress=False)
    msgs = [str(x.message) for x in w if x.category is BaselineWarning]
    assert len(msgs) == 1 and '\n' not in msgs[0] and 'baseline scores better' in msgs[0]
    chk = seg.baseline
    assert chk.baseline_better and chk.silhouette_baseline > chk.silhouette_deep + 0.01
    assert chk.labels.shape == lowcount.labels.shape and chk.k == 4 and len(np.unique(chk.labels)) == 4
    assert ari(chk.labels, lowcount.labels) > ari(seg.labels, lowcount.labels)
    d = chk.to_dict()
    assert set(d['silhouette']) == {'deep', 'baseline'} and 'PCA' in d['space'] and 'labels' not in d

def test_baseline_off_and_dask_path_agree(lowcount, weak, tmp_path):
    assert segment(lowcount, weak, k_range=(4, 4), baseline=False, progress=False).baseline is None
    z = write_cube(tmp_path/'c.zarr', lowcount.cube, lowcount.axis, chunk_rows=8)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', BaselineWarning)
        a = segment(z, weak, k_range=(4, 4), chunk_rows=6, progress=False)
        b = segment(z, weak, k_range=(4, 4), chunk_rows=6, use_dask=True, progress=False)
    np.testing.assert_array_equal(a.baseline.labels, b.baseline.labels)
    assert a.baseline.to_dict() == b.baseline.to_dict()

def test_segment_file_writes_json_baseline_labels_and_one_line(lowcount, weak, tmp_path, capsys):
    cube, model = write_cube(tmp_path/'c.h5', lowcount.cube, lowcount.axis), weak.save(tmp_path/'m.pt')
    out = segment_file(cube, model, tmp_path/'seg.npy', k_range=(4, 4), progress=False)
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith('warning:')]
    assert len(err) == 1 and 'seg_baseline.npy' in err[0]
    s = json.loads((tmp_path/'seg.json').read_text())
    assert s['k'] == 4 and s['baseline']['baseline_better'] and s['baseline_labels'] == 'seg_baseline.npy'
    assert np.load(tmp_path/'seg_baseline.npy').shape == np.load(out).shape == lowcount.labels.shape

def test_a_good_model_is_not_flagged_and_leaves_no_baseline_file(tmp_path):
    "The demo cube (400 photons per pixel, pure classes): both methods find the same 3 clusters."
    sc = xrf_cube_from_rgb(demo_rgb('coffee', 24), n_channels=128, random_state=0)
    m = DeepSpectralClustering(verbose=False, random_state=0).fit(sc.cube.reshape(-1, 128))
    (tmp_path/'seg_baseline.npy').write_bytes(b'stale')
    segment_file(write_cube(tmp_path/'c.h5', sc.cube), m.save(tmp_path/'m.pt'), tmp_path/'seg.npy',
                 k_range=(3, 3), progress=False)
    s = json.loads((tmp_path/'seg.json').read_text())
    assert not s['baseline']['baseline_better'] and s['baseline_labels'] is None
    assert not (tmp_path/'seg_baseline.npy').exists()
