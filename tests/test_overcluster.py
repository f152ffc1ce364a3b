"Overclustering: bad input, save/load and new samples, cluster_store, galleries, UMAP subset logic, truth matching."
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA

from sediment_cluster.core import InputError
from sediment_cluster.particles.overcluster import (OverClusterer, cluster_store, read_latent, cluster_members,
                                                    montage_image,
    cluster_montage, clusters_overview, write_montage, select_layer, sharpness, umap_embedding, umap_view,
    particle_truth, cluster_purity, cluster_composition, pixel_features, MODEL)
from sediment_cluster.core import model_format
from sediment_cluster.particles.store import ParticleStore

L, S = 3, 10


@pytest.fixture(scope='module')
def blobs():
    X, y = make_blobs(600, 8, centers=4, random_state=3)
    return X.astype(np.float32), y


def make_store(path, n=40, latent=None, stacks=None, boxes=None):
    "A tiny store: crop i is filled with grey level i in layer 0, with a checkerboard in layer 1 (the sharp one)."
    crops = np.zeros((n, L, S, S, 3), np.uint8) + np.arange(n, dtype=np.uint8)[:, None, None, None, None]
    crops[:, 1, ::2, ::2] = 255
    t = pd.DataFrame({'stack_id': stacks if stacks is not None else ['s0'] * n})
    if boxes is not None: t[['x0', 'y0', 'x1', 'y1']] = boxes
    st = ParticleStore.create(path, t, crops)
    if latent is not None: st.write_array('latent.npy', latent)
    return st


# ---------------------------------------------------------------- the estimator
@pytest.mark.parametrize('engine', ['torch', 'sklearn'])
def test_fit_predict_consistent(blobs, engine):
    X, y = blobs
    oc = OverClusterer(12, engine=engine, random_state=0).fit(X)
    assert oc.cluster_centers_.shape == (12, 8) and oc.cluster_centers_.dtype == np.float32
    assert (oc.predict(X) == oc.labels_).all()
    lab, dist = oc.assign(X)
    np.testing.assert_allclose(dist, oc.transform(X).min(1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose((dist.astype(float) ** 2).sum(), oc.inertia_, rtol=1e-3)
    assert pd.crosstab(oc.labels_, y).gt(0).sum(axis=1).max() == 1          # overclusters never mix blobs
    again = OverClusterer(12, engine=engine, random_state=0).fit(X)
    assert (again.labels_ == oc.labels_).all()


def test_engines_agree(blobs):
    from sklearn.metrics import adjusted_rand_score
    X, y = blobs
    a, b = (OverClusterer(4, engine=e, random_state=1).fit(X) for e in ('torch', 'sklearn'))
    assert adjusted_rand_score(a.labels_, b.labels_) == 1 and abs(a.inertia_ / b.inertia_ - 1) < 1e-4
    a, b = (OverClusterer(12, n_init=4, engine=e, random_state=1).fit(X).inertia_ for e in ('torch', 'sklearn'))
    assert abs(a / b - 1) < 0.05                                            # different local optima, same quality


def test_save_load_new_samples(blobs, tmp_path):
    X, _ = blobs
    oc = OverClusterer(10, random_state=0).fit(X[:400])
    p = oc.save(tmp_path/'m.npz')
    with np.load(p, allow_pickle=False) as z:                               # plain arrays, no pickle
        assert json.loads(str(z['header']))["format"] == model_format(OverClusterer)
    new = OverClusterer.load(p)
    assert (new.predict(X[400:]) == oc.predict(X[400:])).all()              # new samples, no refit
    np.testing.assert_array_equal(new.transform(X[400:]), oc.transform(X[400:]))
    assert new.get_params() == oc.get_params() and new.n_features_in_ == 8
    assert [f.name for f in tmp_path.iterdir()] == ['m.npz']


@pytest.mark.parametrize('make, msg', [
    (lambda X: OverClusterer(100).fit(X[:30]), 'n_clusters=100 is more than the 30 samples'),
    (lambda X: OverClusterer(3).fit(X[:0]), 'is empty'),
    (lambda X: OverClusterer(3).fit(np.where(np.arange(len(X))[:, None] == 5, np.nan, X)), '1 rows with NaN'),
    (lambda X: OverClusterer(3).fit(X).predict(X[:, :5]), 'X has 5 features, but OverClusterer is expecting 8'),
    (lambda X: OverClusterer(3).fit(X).predict(np.full((2, 8), np.inf)), 'NaN or infinite'),
    (lambda X: OverClusterer(0).fit(X), 'n_clusters=0'),
    (lambda X: OverClusterer(2.5).fit(X), 'n_clusters=2.5'),
    (lambda X: OverClusterer(3, n_init=0).fit(X), 'n_init=0'),
    (lambda X: OverClusterer(3, engine='faiss').fit(X), "engine='faiss'"),
    (lambda X: OverClusterer(3, seed_size=0).fit(X), 'seed_size=0'),
    (lambda X: OverClusterer(3).fit(np.where(np.arange(len(X))[:, None] == 2, [np.inf] + [0.] * 7, X)),
     '1 rows with NaN or infinite'),
])
def test_bad_input(blobs, make, msg):
    with pytest.raises(InputError, match=msg.replace('(', r'\(')): make(blobs[0])


def test_seed_size_samples_the_seeds_only(blobs):
    "Seeds drawn from a sample of the points: every point is still clustered, near the inertia of all-point seeding."
    X = blobs[0]
    full = OverClusterer(12, seed_size=None, random_state=0).fit(X)
    sampled = OverClusterer(12, seed_size=40, random_state=0).fit(X)
    assert len(sampled.labels_) == len(X) and sampled.inertia_ <= 1.1 * full.inertia_
    np.testing.assert_array_equal(sampled.labels_, sampled.predict(X))


def test_load_bad_files(tmp_path):
    with pytest.raises(InputError, match='no such OverClusterer model file'): OverClusterer.load(tmp_path/'none.npz')
    (tmp_path/'x.npz').write_bytes(b'junk')
    with pytest.raises(InputError, match='not an OverClusterer model file'): OverClusterer.load(tmp_path/'x.npz')
    np.savez(tmp_path/'y.npz', cluster_centers=np.zeros((2, 2)), labels=np.zeros(2),
             header=np.array(json.dumps({'format': 'other'})))
    with pytest.raises(InputError, match="model format 'other'"): OverClusterer.load(tmp_path/'y.npz')


# ---------------------------------------------------------------- cluster_store
def test_cluster_store_and_apply(blobs, tmp_path):
    X = blobs[0][:40]
    st = make_store(tmp_path/'a', latent=X)
    out = cluster_store(st.path, k=4, progress=False)                   # a path works as well as a store
    cl = pd.read_parquet(out)
    assert list(cl.columns) == ['particle_id', 'cluster', 'distance'] and len(cl) == 40
    assert cl.particle_id.tolist() == list(range(40)) and cl.distance.dtype == np.float32 and (cl.distance >= 0).all()
    m = OverClusterer.load(st.path/MODEL)
    assert (m.predict(X) == cl.cluster.to_numpy()).all()
    # a new store with other particles is clustered by the saved model, not refitted
    Xn = blobs[0][40:70]
    st2 = make_store(tmp_path/'b', n=30, latent=Xn)
    cl2 = pd.read_parquet(cluster_store(st2, model=st.path/MODEL, progress=False))
    assert (cl2.cluster.to_numpy() == m.predict(Xn)).all()
    np.testing.assert_array_equal(OverClusterer.load(st2.path/MODEL).cluster_centers_, m.cluster_centers_)
    cl3 = pd.read_parquet(cluster_store(st2, model=m, progress=False))     # an estimator works too
    pd.testing.assert_frame_equal(cl2, cl3)


def test_cluster_store_bad_input(blobs, tmp_path):
    X = blobs[0]
    st = make_store(tmp_path/'a', n=10)
    with pytest.raises(InputError, match='no latent features in the store; encode it first'):
        cluster_store(st, progress=False)
    st.write_array('latent.npy', X[:9])
    with pytest.raises(InputError, match='does not match the store.s 10 particles'): read_latent(st)
    st.write_array('latent.npy', X[:10])
    with pytest.raises(InputError, match='n_clusters=100 is more than the 10 samples'):
        cluster_store(st, progress=False)
    bad = X[:10].copy()
    bad[2, 2] = np.nan
    st.write_array('latent.npy', bad)
    with pytest.raises(InputError, match='NaN'): cluster_store(st, k=2, progress=False)
    OverClusterer(3).fit(X[:, :5]).save(tmp_path/'m5.npz')
    st.write_array('latent.npy', X[:10])
    with pytest.raises(InputError, match='m5.npz: fitted on latents of width 5 but .*latent.npy has width 8'):
        cluster_store(st, model=tmp_path/'m5.npz', progress=False)
    empty = ParticleStore.create(tmp_path/'e', pd.DataFrame({'stack_id': []}), np.zeros((0, L, S, S, 3), np.uint8))
    with pytest.raises(InputError, match='holds no particles'): cluster_store(empty, progress=False)
    with pytest.raises(InputError, match='no such particle store'): cluster_store(tmp_path/'nothing', progress=False)


# ---------------------------------------------------------------- galleries
@pytest.fixture
def clustered(tmp_path):
    st = make_store(tmp_path/'g', n=12)
    cl = pd.DataFrame({'particle_id': range(12), 'cluster': [0, 1] * 6,
                       'distance': np.float32([5, 1, 3, 2, 4, 0, 1, 9, 2, 3, 0, 7])})
    st.write_table('clusters.parquet', cl)
    return st, cl


def test_members_sorted_by_distance(clustered):
    st, cl = clustered
    assert cluster_members(cl, 0).tolist() == [10, 6, 8, 2, 4, 0]
    assert cluster_members(cl, 1, n=2).tolist() == [5, 1]
    with pytest.raises(InputError, match='cluster 2 does not exist; the clusters are 0..1'): cluster_members(cl, 2)


def test_montage_order_and_layers(clustered, tmp_path):
    st, cl = clustered
    img = montage_image(st, 0, n=3, ncols=3, layer=0, pad=1)
    assert img.shape == (1 + S + 1, 1 + 3 * (S + 1), 3) and img.dtype == np.uint8
    assert [img[1, 1 + j * (S + 1) + 2, 0] for j in range(3)] == [10, 6, 8]     # grey level = particle index
    sharp = montage_image(st, 0, n=1, layer='sharpest', pad=0)
    assert (sharp == st[10][1]).all()                                         # layer 1 has the checkerboard
    assert (montage_image(st, 0, n=1, layer=-1, pad=0) == st[10][2]).all()
    with pytest.raises(InputError, match="layer='top'"): montage_image(st, 0, layer='top')
    with pytest.raises(InputError, match='the crops have 3 layers'): montage_image(st, 0, layer=3)
    p = write_montage(st, 1, tmp_path/'m.png', n=4)
    import cv2
    assert cv2.imread(str(p)).shape == montage_image(st, 1, n=4).shape
    assert not list(tmp_path.glob('.*'))


def test_figures(clustered):
    import matplotlib.pyplot as plt
    st, cl = clustered
    fig = cluster_montage(st, 1, n=4)
    assert 'cluster 1: 6 particles' in fig.axes[0].get_title()
    fig2 = clusters_overview(st, per_cluster=4)
    assert sum(ax.has_data() for ax in fig2.axes) == 2
    plt.close('all')
    (st.path/'clusters.parquet').unlink()
    with pytest.raises(InputError, match='no clusters yet; run cluster_store'): clusters_overview(st)


def test_sharpness_prefers_detail():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    flat = np.full_like(sharp, 128)
    assert (sharpness(sharp) > sharpness(flat)).all() and (sharpness(flat) == 0).all()
    crops = np.stack([flat, sharp, flat], 1)                               # (4, 3 layers, ...)
    assert (select_layer(crops) == sharp).all()


# ---------------------------------------------------------------- UMAP view (logic with a PCA stand-in)
class Recorder(PCA):
    "A PCA that remembers how many rows it was fitted on and transformed."
    def fit_transform(self, X, y=None):
        self.n_fit = len(X)
        return super().fit_transform(X)
    def transform(self, X):
        self.n_transformed = len(X)
        return super().transform(X)


def test_umap_subset_and_rest(blobs):
    X, y = blobs
    r = Recorder(2)
    emb = umap_embedding(X, max_fit=100, reducer=r, random_state=3)
    assert emb.shape == (600, 2) and emb.dtype == np.float32 and (r.n_fit, r.n_transformed) == (100, 500)
    np.testing.assert_array_equal(emb, umap_embedding(X, max_fit=100, reducer=PCA(2), random_state=3))
    emb2, fig = umap_view(X, y, reducer=PCA(2))                           # all rows fitted when N <= max_fit
    np.testing.assert_allclose(emb2, PCA(2).fit_transform(X), rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match='labels has 3 items but the embedding has 600'):
        umap_view(X, y[:3], reducer=PCA(2))


# ---------------------------------------------------------------- truth and purity
def test_particle_truth(tmp_path):
    boxes = [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 10]]
    st = make_store(tmp_path/'t', n=4, stacks=['a', 'a', 'a', 'b'], boxes=boxes)
    truth = pd.DataFrame({'stack_id': ['a', 'a', 'a', 'c'], 'grain_id': [0, 1, 2, 0],
                          'cls': ['quartz', 'foram', 'dark', 'foram'],
                          'x0': [1, 20, 54, 0], 'y0': [0, 22, 54, 0], 'x1': [10, 30, 64, 10], 'y1': [10, 30, 64, 10]})
    t = particle_truth(st, truth)
    assert t.cls.tolist() == ['quartz', 'foram',
                              'unmatched', 'unmatched']   # IoU 0.9, 0.8, 36/164 < .5, stack not in truth
    assert t.grain_id.tolist() == [0, 1, -1, -1]
    np.testing.assert_allclose(t.iou, [0.9, 0.8, 0, 0])
    truth.to_parquet(tmp_path/'truth.parquet')
    pd.testing.assert_frame_equal(particle_truth(st, tmp_path), t)            # the folder or the file
    assert particle_truth(st, truth, min_iou=0.85).cls.tolist() == ['quartz', 'unmatched', 'unmatched', 'unmatched']
    with pytest.raises(InputError, match='no truth table'): particle_truth(st, tmp_path/'nothing')


def test_truth_one_to_one(tmp_path):
    "Two particles over one grain: only the better one gets it."
    st = make_store(tmp_path/'t', n=2, stacks=['a', 'a'], boxes=[[0, 0, 10, 10], [0, 0, 10, 9]])
    truth = pd.DataFrame({'stack_id': ['a'], 'grain_id': [7], 'cls': ['dark'], 'x0': [0],
                          'y0': [0], 'x1': [10], 'y1': [9]})
    assert particle_truth(st, truth).cls.tolist() == ['unmatched', 'dark']


def test_purity_and_composition():
    lab = [0, 0, 0, 1, 1, 2]
    cls = ['a', 'a', 'b', 'b', 'unmatched', None]
    assert cluster_purity(lab, cls) == pytest.approx(3 / 4)
    comp = cluster_composition(lab, cls)
    assert comp.index.tolist() == [0, 1] and comp.n.tolist() == [3, 1] and comp.majority.tolist() == ['a', 'b']
    assert cluster_purity([0, 1, 2], ['x', 'y', 'z']) == 1.0
    with pytest.raises(InputError, match='no particle has a true class'): cluster_purity([0, 1], ['unmatched', None])
    with pytest.raises(InputError, match='labels has 2 items but the classes 3'):
        cluster_purity([0, 1], ['a', 'b', 'c'])


def test_pixel_features(tmp_path):
    st = make_store(tmp_path/'p', n=20)
    F = pixel_features(st, size=4, n_components=5)
    assert F.shape == (20, 5) and F.dtype == np.float32 and np.isfinite(F).all()
    # crops differ only by their grey level, so the first component orders them by it
    assert abs(np.corrcoef(F[:, 0], np.arange(20))[0, 1]) > 0.99


def test_constant_data_warns():
    X = np.ones((10, 4), np.float32)
    with pytest.warns(UserWarning, match='fewer distinct points than n_clusters=3'): oc = OverClusterer(3).fit(X)
    assert (oc.predict(X) == 0).all() and oc.inertia_ == 0


# ---------------------------------------------------------------- integrity
def test_cluster_store_records_and_locks(blobs, tmp_path):
    import json
    st = make_store(tmp_path/'a', latent=blobs[0][:40])
    with st.locked('cluster run'):
        with pytest.raises(InputError, match='another cluster run is writing this store; wait for it'):
            cluster_store(st, k=4, progress=False)
    cluster_store(st, k=4, random_state=1, progress=False)
    files = json.loads((st.path/'manifest.json').read_text())['files']
    assert files['clusters.parquet']['rebuild'] == f'sediment-cluster cluster {st.path} --k 4 --seed 1'
    assert set(files['clusters.parquet']['from']) == {'latent.npy', 'particles.parquet'}
    assert files[MODEL]['from'] == {'latent.npy': files['latent.npy']['sha256']}


def test_damaged_latent_named(blobs, tmp_path):
    st = make_store(tmp_path/'a', latent=blobs[0][:40])
    cmd = 'sediment-cluster encode X --model m'
    st.write_array('latent.npy', blobs[0][:40], sources=['crops.sums.npy'], rebuild=cmd)
    p = st.path/'latent.npy'
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(InputError, match=f'latent.npy: truncated .*; rebuild it with `{cmd}`'):
        cluster_store(st, k=4, progress=False)
    p.write_bytes(b'junk')
    st.record('latent.npy')   # recorded as it is: still no array
    with pytest.raises(InputError, match=r'latent.npy: not readable \(ValueError'):
        cluster_store(st, k=4, progress=False)


def test_stale_latent_refused(blobs, tmp_path):
    st = make_store(tmp_path/'a', latent=None)
    st.write_array('latent.npy', blobs[0][:40], sources=['crops.sums.npy'])
    ParticleStore.create(st.path, st.table.drop(columns='particle_id'), np.zeros((40, L, S, S, 3), np.uint8))
    with pytest.raises(InputError, match='latent.npy: computed from an earlier crops.sums.npy'):
        cluster_store(st.path, k=4, progress=False)


# ---------------------------------------------------------------- feature sets
def test_cluster_store_any_feature_set(blobs, tmp_path):
    import json
    from sediment_cluster.particles.features import write_feature_set
    from sediment_cluster.particles.overcluster import clustered_on
    X, y = blobs
    st = make_store(tmp_path/'a', latent=np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32))
    assert clustered_on(st) is None
    write_feature_set(st, 'good', X[:40], made_by='make_blobs')
    cl = pd.read_parquet(cluster_store(st, k=4, features='good', progress=False))
    assert pd.crosstab(cl.cluster, y[:40]).gt(0).sum(axis=1).max() == 1   # the blobs, not the noise of latent.npy
    files = json.loads((st.path/'manifest.json').read_text())['files']
    assert set(files['clusters.parquet']['from']) == {'features_good.npy', 'particles.parquet'}
    assert files['clusters.parquet']['features'] == files[MODEL]['features'] == 'good' == clustered_on(st)
    assert files['clusters.parquet']['rebuild'].endswith('--k 4 --seed 0 --features good')
    write_feature_set(st, 'good', X[40:80])                             # new features: the clusters are stale
    assert st.stale('clusters.parquet') == ['features_good.npy']
    cluster_store(st, k=4, progress=False)                              # the default is still the VAE's latent.npy
    assert clustered_on(st) == 'vae' and st.stale('clusters.parquet') == []


def test_cluster_store_feature_set_errors(blobs, tmp_path):
    from sediment_cluster.particles.features import write_feature_set
    st = make_store(tmp_path/'a')
    with pytest.raises(InputError, match="features_nope.npy: no feature set 'nope' in the store; the store has: none"):
        cluster_store(st, k=4, features='nope', progress=False)
    with pytest.raises(InputError, match="feature set name 'a b'"): cluster_store(st, features='a b', progress=False)
    write_feature_set(st, 'w8', blobs[0][:40])
    m = cluster_store(st, k=4, features='w8', progress=False) and st.path/MODEL
    write_feature_set(st, 'w3', blobs[0][:40, :3])
    with pytest.raises(InputError, match='fitted on latents of width 8 but .*features_w3.npy has width 3'):
        cluster_store(st, model=m, features='w3', progress=False)
