"Image-independent training (`cubes.evaluate.cross_cube_protocol`): each cube held out, trained on the others."
import numpy as np, pytest, torch
from sediment_cluster.core import InputError
from sediment_cluster.cubes.datacube import write_cube
from sediment_cluster.cubes.deepcluster import DeepSpectralClustering
from sediment_cluster.cubes.evaluate import cross_cube_protocol

C, K = 32, 3
FAST = dict(latent=3, encoding=8, n_hidden=1, lr=3e-3, preprocessor=None, max_steps=150, clustering=None)

def cube(seed, hw=(16, 12)):
    "A Poisson cube of `K` classes painted in random rectangles, each class one Gaussian peak at its own channel."
    rng = np.random.default_rng(seed)
    y = np.zeros(hw, np.int64)
    for c in range(1, K):
        r, q = rng.integers(0, hw[0] - 6), rng.integers(0, hw[1] - 5)
        y[r:r + 6, q:q + 5] = c
    pos = np.linspace(.2, .8, K) * C
    mean = 1 + 40 * np.exp(-.5 * ((np.arange(C)[None] - pos[y.ravel()][:, None]) / 2) ** 2)
    return rng.poisson(mean).reshape(*hw, C).astype(np.uint16), y

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('cross')
    cubes = [cube(s) for s in range(3)]
    paths = [write_cube(d/f'cube{s}.npy', X, np.arange(C)) for s, (X, _) in enumerate(cubes)]
    refs = [y for _, y in cubes]
    np.save(d/'ref0.npy', refs[0])
    return d, paths, refs, cross_cube_protocol(paths, [d/'ref0.npy', *refs[1:]], d, k_range=(2, 5), **FAST)

def test_table(run):
    d, paths, refs, tab = run
    assert list(tab.index) == ['cube0', 'cube1', 'cube2']
    assert (tab.k == K).all()
    np.testing.assert_allclose(tab.gap, tab.f1_self - tab.f1_others)
    assert ((tab[['f1_others', 'f1_self', 'f1_pca']] >= 0) & (tab[['f1_others', 'f1_self', 'f1_pca']] <= 1)).all().all()

def test_trained_on_the_others_only(run):
    d, paths, refs, tab = run
    n = refs[0].size
    for i in range(3):
        assert len(DeepSpectralClustering.load(d/f'cube{i}_others.pt').labels_) == 2 * n   # the two other cubes
        assert len(DeepSpectralClustering.load(d/f'cube{i}_self.pt').labels_) == n

def test_same_classes_generalise(run):
    "Cubes of the same three spectra in other places: a model trained on two segments the third as well as its own."
    tab = run[3]
    assert (tab.f1_others > 0.95).all() and (tab.f1_pca > 0.95).all()
    assert (tab.gap.abs() < 0.05).all()

def test_bad_input(run, tmp_path):
    d, paths, refs, _ = run
    with pytest.raises(InputError, match='give at least 2 cube files'):
        cross_cube_protocol(paths[:1], refs[:1], tmp_path)
    with pytest.raises(InputError, match='one reference per cube'): cross_cube_protocol(paths, refs[:2], tmp_path)
    with pytest.raises(InputError, match='reference of cube1.npy'):
        cross_cube_protocol(paths, [refs[0], refs[1][:4], refs[2]], tmp_path)
