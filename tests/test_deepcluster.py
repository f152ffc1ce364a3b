("Deep spectral clustering: gradient of the clustering term, tightening, loss modes, segmentation paths, files and bad "
 "input.")
import math, warnings
import numpy as np, pytest, torch
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score, silhouette_score
import sediment_cluster.core as core
from sediment_cluster.core import InputError
from sediment_cluster.cubes.datacube import Datacube, SpectraPreprocessor, rebin, write_cube
from sediment_cluster.latent import Ramp, TrainingDiverged
from sediment_cluster.cubes.losses import ClusteringLoss, kmeans_loss, silhouette_loss
from sediment_cluster.cubes.deepcluster import (DeepSpectralClustering, ManifoldRefine, train_spectral, within_between,
                                                cluster_latents)
from sediment_cluster.cubes.segment import segment, segment_file
from sediment_cluster.cubes.spectral import SpectralAutoencoder, autoencoder_loss

C = 32

def spectra(n=600, c=C, seed=0, k=3):
    "Poisson spectra of `k` classes, each one Gaussian peak at its own channel; returns (X, y)."
    rng = np.random.default_rng(seed)
    ch, y = np.arange(c), rng.integers(0, k, n)
    pos = np.linspace(.2, .8, k) * c
    mean = 1 + 40 * np.exp(-.5 * ((ch[None] - pos[y][:, None]) / 2) ** 2)
    return rng.poisson(mean).astype(np.float32), y

FAST = dict(latent=3, encoding=8, n_hidden=1, batch_size=100, lr=3e-3, k_range=(2, 5), verbose=False, preprocessor=None)

@pytest.fixture(scope='module')
def data(): return spectra()

@pytest.fixture(scope='module')
def model(data):
    X, _ = data
    return DeepSpectralClustering(epochs=18, gamma=Ramp(0., 1., 12, 14), clustering='kmeans', random_state=0,
                                  **FAST).fit(X)

@pytest.fixture(scope='module')
def cube(data):
    X, y = data
    return X[:576].reshape(24, 24, C), y[:576].reshape(24, 24)

# --- the clustering term carries gradient -----------------------------------------------------------

@pytest.mark.parametrize('kind', ['kmeans', 'silhouette', 'soft_silhouette'])
def test_clustering_term_moves_encoder_only(data, kind):
    X, _ = data
    torch.manual_seed(0)
    net = SpectralAutoencoder(C, 3, 8, 1)
    x = torch.from_numpy(X / X.std())
    term = ClusteringLoss(gamma=1., kind=kind, k_range=(3, 3), random_state=0)
    term.on_epoch_begin(net, 0, x)
    net.train()
    term(net, x, net(x), 0)['clust'].backward()
    for name, p in net.named_parameters():
        moved = p.grad is not None and p.grad.abs().sum() > 0
        assert moved == name.startswith(('encoder', 'head')), name

@pytest.mark.parametrize('fn', [kmeans_loss, lambda z, c: silhouette_loss(z, c, 1.)])
def test_terms_are_scale_free_and_bounded(fn):
    g = torch.Generator().manual_seed(1)
    cent = torch.tensor([[0., 0, 0], [5, 0, 0]])
    z = cent[torch.arange(200) % 2] + torch.randn(200, 3, generator=g)
    a, b = fn(z, cent)[0].item(), fn(7 * z, 7 * cent)[0].item()
    assert abs(a - b) < 1e-4 and 0 <= a <= 1

def test_training_with_the_term_tightens_the_classes(data):
    "Same seed and schedule; the k-means term lowers within/between and raises the silhouette of the true classes."
    X, y = data
    kw = dict(epochs=24, gamma=Ramp(0., 1., 14, 18), patience=30, random_state=0, **FAST)
    plain = DeepSpectralClustering(clustering=None, **kw).fit(X)
    joint = DeepSpectralClustering(clustering='kmeans', **kw).fit(X)
    Zp, Zj = plain.transform(X), joint.transform(X)
    assert within_between(Zj, y) < 0.8 * within_between(Zp, y), (within_between(Zj, y), within_between(Zp, y))
    assert silhouette_score(Zj, y) > silhouette_score(Zp, y)
    assert joint.n_clusters_ == 3 and adjusted_rand_score(y, joint.labels_) > 0.99

# --- eq. (6): ramps, sum and product, schedule -------------------------------------------------------

@pytest.mark.parametrize('variant', ['ae', 'vae'])
def test_product_mode_is_the_product(data, variant):
    X, _ = data
    torch.manual_seed(0)
    net = SpectralAutoencoder(C, 3, 8, 1, variant=variant).eval()
    x = torch.from_numpy(X[:200] / X.std())
    term = ClusteringLoss(gamma=0.7, mode='product', beta=0.05, k_range=(3, 3), random_state=0)
    term.on_epoch_begin(net, 0, x)
    out = net(x)
    t = autoencoder_loss(net, x, out, beta=0.05, extra_loss=term)
    L = t['rec'] + 0.05 * t.get('kl', 0.)
    S = kmeans_loss(out.mu, term.centres)[0]
    assert torch.allclose(t['loss'], L * (1 + 0.7 * S) / 1.7, rtol=1e-5)

def test_sum_mode_follows_the_ramp(model):
    "The logged clustering term is γ(t)·S with γ from the ramp: 0 before it starts, full after."
    h = model.history_
    g = np.array([Ramp(0., 1., 12, 14)(e) for e in h.epoch])
    assert (h.clust[g == 0] == 0).all()
    on = g > 0
    np.testing.assert_allclose(h.clust[on], g[on] * h.cluster_loss[on], rtol=1e-4)
    assert h.k[on].notna().all() and h.k[~on].isna().all()

def test_pretraining_runs_to_the_end_despite_early_stopping(data):
    "patience=1 cannot stop training while γ = 0: the term always starts."
    X, _ = data
    m = DeepSpectralClustering(epochs=12, gamma=Ramp(0., 1., 6, 7), patience=1, clustering='kmeans', random_state=0,
                               **FAST).fit(X)
    assert len(m.history_) >= 8 and m.history_.k.notna().any()

def test_reduce_lr_on_plateau_and_early_stopping(data):
    X, _ = data
    m = DeepSpectralClustering(**{**FAST, 'lr': 3e-2}, epochs=60, gamma=Ramp(0., .5, 0, 1), patience=4, lr_patience=1,
                               clustering='kmeans', random_state=0).fit(X)
    h = m.history_
    assert len(h) < 60 and h.lr.iloc[-1] < h.lr.iloc[0]

def test_nan_codes_during_training_stop_with_training_diverged(data):
    X, _ = data
    class Poison(ClusteringLoss):
        def on_epoch_begin(self, model, epoch, Xt):
            if epoch == 2:
                with torch.no_grad(): model.head.weight.fill_(math.nan)
            super().on_epoch_begin(model, epoch, Xt)
    net = SpectralAutoencoder(C, 3, 8, 1)
    from sediment_cluster.cubes.spectral import train_autoencoder
    with pytest.raises(TrainingDiverged, match='NaN latent codes at the start of epoch 2'):
        train_autoencoder(net, torch.from_numpy(X / X.std()), epochs=4,
                          extra_loss=Poison(gamma=1., k_range=(2, 3), random_state=0), verbose=False)

# --- estimator ---------------------------------------------------------------------------------------

def test_save_load_round_trip_with_preprocessor(data, tmp_path):
    X, _ = data
    pp = SpectraPreprocessor(n_bins=16, log1p=True)
    m = DeepSpectralClustering(epochs=3, gamma=Ramp(0., .5, 1, 2), random_state=0,
                               **{**FAST, 'preprocessor': pp}).fit(X)
    back = DeepSpectralClustering.load(m.save(tmp_path/'m.pt'), device='cpu')
    np.testing.assert_array_equal(back.transform(X), m.transform(X))
    np.testing.assert_array_equal(back.predict(X), m.predict(X))
    assert back.get_params()['gamma'] == Ramp(0., .5, 1, 2) and back.model_axis(np.arange(C)).shape == (16,)
    assert clone(back).get_params()['preprocessor'].get_params() == m.preprocessor.get_params()

def test_load_refuses_other_files(tmp_path):
    (tmp_path/'x.pt').write_bytes(b'junk')
    with pytest.raises(InputError, match='not a readable DeepSpectralClustering model file'):
        DeepSpectralClustering.load(tmp_path/'x.pt')
    torch.save({'format': 'other'}, tmp_path/'y.pt')
    with pytest.raises(InputError, match='not a DeepSpectralClustering model'):
        DeepSpectralClustering.load(tmp_path/'y.pt')

def test_cluster_latents_on_a_sample_assigns_all():
    rng = np.random.default_rng(0)
    centres = np.array([[0., 0], [12, 0], [0, 12], [12, 12]])
    Z = (centres[rng.integers(0, 4, 5000)] + rng.normal(size=(5000, 2))).astype(np.float32)
    km, lab = cluster_latents(Z, (2, 6), fit_size=800, random_state=0)
    assert km.n_clusters_ == 4 and len(lab) == 5000 and (lab == km.predict(Z)).all()

# --- segmentation -------------------------------------------------------------------------------------

def test_segment_matches_brute_force(model, cube):
    cb, ref = cube
    s = segment(cb, model, k_range=(2, 5), chunk_rows=5, progress=False)
    X = cb.reshape(-1, C)
    lab = s.labels.ravel()
    assert s.n_clusters == 3 and adjusted_rand_score(ref.ravel(), lab) > 0.99
    for k in range(3):
        np.testing.assert_allclose(s.mean_spectra[k], X[lab == k].mean(0), rtol=1e-5)
        np.testing.assert_allclose(s.mean_decoded[k], model.inverse_transform(model.transform(X[lab == k])).mean(0),
                                   rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.integrated['input'], cb.sum(-1), rtol=1e-6)
    np.testing.assert_allclose(s.latent.reshape(-1, 3), model.transform(X), rtol=1e-5, atol=1e-5)
    assert s.counts.sum() == 576 and s.barycentres.shape == (3, C)

def test_segment_streams_in_row_blocks(model, cube):
    "Memory stays one block: the cube is only ever read `chunk_rows` rows at a time."
    cb, _ = cube
    class Spy:
        def __init__(self, a): self.a, self.shape, self.dtype, self.rows = a, a.shape, a.dtype, []
        def __getitem__(self, idx):
            self.rows.append(idx.stop - idx.start)
            return self.a[idx]
    spy = Spy(cb)
    segment(Datacube(spy), model, k_range=(2, 5), chunk_rows=4, progress=False)
    assert max(spy.rows) == 4 and sum(spy.rows) == 2 * 24

def test_segment_refine_gmm_or_kmeans(model, cube):
    "k-means labels (the default) are the nearest centre of each code; the Gaussian refinement keeps k; bad: one line."
    cb, ref = cube
    km = segment(cb, model, k_range=(3, 3), refine=None, progress=False)
    gm = segment(cb, model, k_range=(3, 3), refine='gmm', progress=False)
    assert km.n_clusters == gm.n_clusters == 3 and adjusted_rand_score(ref.ravel(), km.labels.ravel()) > 0.99
    assert adjusted_rand_score(ref.ravel(), gm.labels.ravel()) > 0.9      # 0.967: round codes suit k-means better
    assert (segment(cb, model, k_range=(3, 3), progress=False).labels == km.labels).all()
    Z = model.transform(cb.reshape(-1, C))
    nearest = ((Z[:, None] - km.centres[None]) ** 2).sum(-1).argmin(1)
    assert (km.labels.ravel() == nearest).mean() > 0.999
    with pytest.raises(InputError, match="refine='dbscan'"): segment(cb, model, refine='dbscan', progress=False)

def test_linear_and_preprocessed_model_spaces_agree(data, cube):
    "The shortcut for rebinning (sums of raw spectra, rebinned) equals summing rebinned spectra."
    X, _ = data
    cb, _ = cube
    m = DeepSpectralClustering(epochs=2, n_bins=8, random_state=0, **FAST).fit(X)
    s = segment(cb, m, k_range=(3, 3), chunk_rows=7, progress=False)
    lab = s.labels.ravel()
    Xm = rebin(cb.reshape(-1, C), 8)
    for k in range(3): np.testing.assert_allclose(s.mean_input[k], Xm[lab == k].mean(0), rtol=1e-5)
    np.testing.assert_allclose(s.flat['input'], Xm[s.flat['pixels']], rtol=1e-6)
    np.testing.assert_allclose(s.integrated['input'], cb.sum(-1), rtol=1e-5)

def test_dask_local_cluster_gives_the_same_labels(model, cube, tmp_path):
    distributed = pytest.importorskip('distributed')
    cb, _ = cube
    z = write_cube(tmp_path/'c.zarr', cb, chunk_rows=8)
    stream = segment(z, model, k_range=(2, 5), chunk_rows=6, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl:
            by_address = segment(z, model, k_range=(2, 5), chunk_rows=6, scheduler=cl.scheduler_address, progress=False)
            with distributed.Client(cl) as client:
                by_client = segment(z, model, k_range=(2, 5), chunk_rows=6, scheduler=client, progress=False)
    for d in (by_address, by_client):
        np.testing.assert_array_equal(d.labels, stream.labels)
        np.testing.assert_allclose(d.mean_spectra, stream.mean_spectra)
        assert d.info['backend'] == 'dask'

def test_segment_file_and_train_spectral(data, tmp_path):
    X, y = data
    for i in range(2): write_cube(tmp_path/f'c{i}.h5', X[i * 288:(i + 1) * 288].reshape(12, 24, C))
    mp = train_spectral([tmp_path/'c0.h5', tmp_path/'c1.h5'], tmp_path/'m.pt', latent=3, epochs=2, gamma_ramp=(0, 1),
                        batch_size=100, k_range=(2, 5), max_spectra=400, progress=False, encoding=8, n_hidden=1)
    m = DeepSpectralClustering.load(mp)
    assert len(m.labels_) == 400 and m.k_range == (2, 5)
    out = segment_file(tmp_path/'c0.h5', mp, tmp_path/'lab.npy', k_range=(2, 4), progress=False)
    lab = np.load(out)
    assert lab.shape == (12, 24) and lab.dtype == np.int32 and lab.max() < 4
    assert not list(tmp_path.glob('.*tmp*'))   # atomic: no temporary left behind

def test_train_spectral_ignores_global_random_state(data, tmp_path):
    "The same `random_state` gives the same model and labels, whatever the process consumed of the global RNGs before."
    X, _ = data
    write_cube(tmp_path/'c.h5', X[:576].reshape(24, 24, C))
    kw = dict(latent=3, epochs=4, gamma_ramp=(1, 3), batch_size=100, k_range=(2, 5), max_spectra=500, progress=False,
              encoding=8, n_hidden=1)
    runs = []
    for i, junk in enumerate([0, 1000]):
        torch.rand(junk)
        np.random.rand(junk)
        torch.manual_seed(junk + 7)
        np.random.seed(junk + 7)
        path = train_spectral(tmp_path/'c.h5', tmp_path/f'm{i}.pt', random_state=3, **kw)
        runs.append(DeepSpectralClustering.load(path))
    a, b = (r.ae_.model_.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(runs[0].labels_, runs[1].labels_)

# --- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('k_range,msg', [((6, 2), 'k_min <= k_max'), ((1, 4), 'start at k >= 2'),
                                         ((2, 700), 'k=700 is more than the 576 samples')])
def test_bad_k_range_in_segment(model, cube, k_range, msg):
    with pytest.raises(InputError, match=msg): segment(cube[0], model, k_range=k_range, progress=False)

def test_k_larger_than_n_in_fit(data):
    with pytest.raises(InputError, match='k=12 is more than the 10 samples'):
        DeepSpectralClustering(**{**FAST, 'k_range': (2, 12)}).fit(data[0][:10])

def test_nan_latents_from_a_diverged_model(model, cube, tmp_path):
    broken = DeepSpectralClustering.load(model.save(tmp_path/'m.pt'), device='cpu')
    with torch.no_grad(): broken.ae_.model_.encoder[0][0].weight[3] = math.nan
    with pytest.raises(InputError, match='latent codes are NaN or infinite.*diverged'):
        segment(cube[0], broken, progress=False)

def test_constant_cube_gives_one_cluster_with_a_warning(model):
    flat = np.broadcast_to(np.arange(C, dtype=np.float32), (15, 15, C)).copy()
    with pytest.warns(UserWarning, match='identical'): s = segment(flat, model, progress=False)
    assert s.n_clusters == 1 and (s.labels == 0).all()

def test_constant_training_data_does_not_crash():
    X = np.ones((200, C), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        m = DeepSpectralClustering(epochs=3, gamma=1., random_state=0, **FAST).fit(X)
    assert m.n_clusters_ == 1

def test_other_bad_input(model, cube, data, tmp_path, monkeypatch):
    cb, _ = cube
    with pytest.raises(InputError, match='20 channels but the model was trained on 32'): segment(cb[..., :20], model)
    nan = cb.copy()
    nan[5, 9, 0] = np.inf
    with pytest.raises(InputError, match=r'first: pixel \(row 5, column 9\), channel 0'):
        segment(nan, model, progress=False)
    with pytest.raises(InputError, match="mode='times'"): DeepSpectralClustering(mode='times').fit(data[0])
    with pytest.raises(InputError, match='not both'):
        DeepSpectralClustering(n_bins=8, preprocessor=SpectraPreprocessor()).fit(data[0])
    with pytest.raises(InputError, match='chunk_rows=0'): segment(cb, model, chunk_rows=0)
    with pytest.raises(InputError, match='written as .npy'):
        segment_file(tmp_path/'c.h5', tmp_path/'m.pt', tmp_path/'l.png')
    with pytest.raises(InputError, match='no such model file'): segment(cb, tmp_path/'none.pt')
    write_cube(tmp_path/'c.h5', cb)
    with pytest.raises(InputError, match='the dask path reads zarr'): segment(tmp_path/'c.h5', model, use_dask=True)
    monkeypatch.setattr(core, 'DASK_TIMEOUT', '1s')
    with pytest.raises(InputError, match='cannot connect to a dask scheduler'):
        segment(cb, model, scheduler='tcp://127.0.0.1:9')
    write_cube(tmp_path/'d.npy', np.zeros((4, 4, 16), np.uint16))
    with pytest.raises(InputError, match='different channel counts'):
        train_spectral([tmp_path/'c.h5', tmp_path/'d.npy'], tmp_path/'m.pt')

# --- the manifold head (N2D on a sample of codes) ------------------------------------------------

def _bars(seed=1, n=1000):
    "Two long parallel bars in 8 dimensions (k-means cuts them across): codes and labels."
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    X = np.c_[rng.normal(size=n) * 4, rng.normal(size=n) * .3 + 2 * y, rng.normal(size=(n, 6)) * .3]
    return (X @ np.linalg.qr(rng.normal(size=(8, 8)))[0]).astype(np.float32), y

@pytest.mark.parametrize('method', ['spectral', 'umap'])
def test_manifold_refine_fits_a_sample_and_assigns_all(method):
    Z, y = _bars()
    mr = ManifoldRefine(n_clusters=2, method=method, fit_size=500, random_state=0).fit(Z)
    assert mr.n_clusters_ == 2 and len(mr.sample_labels_) == 500 and mr.cluster_centers_.shape == (2, 8)
    assert adjusted_rand_score(y, mr.predict(Z)) > 0.9
    assert adjusted_rand_score(y, cluster_latents(Z, None, 2, None, 0)[1]) < 0.3
    again = ManifoldRefine(n_clusters=2, method=method, fit_size=500, random_state=0).fit(Z)
    assert (again.predict(Z) == mr.predict(Z)).all()

def test_cluster_codes_manifold_takes_k_from_the_codes():
    "With a range of k, the manifold head clusters at the k IKMeans's silhouette picks on the codes."
    from sediment_cluster.cubes.deepcluster import cluster_codes
    Z, _ = spectra(400, seed=5)
    km = cluster_codes(Z, (2, 6), refine='kmeans')
    mr = cluster_codes(Z, (2, 6), refine='manifold')
    assert mr.n_clusters_ == km.n_clusters_ == 3 and mr.scores_ == km.scores_
    with pytest.raises(InputError, match="method='tsne'"): ManifoldRefine(method='tsne').fit(Z)

def test_manifold_refine_small_or_identical_codes():
    "Too few codes for a manifold: k-means on the codes; identical codes: one cluster, predict all zeros."
    Z, y = _bars(n=40)
    assert ManifoldRefine(n_clusters=2).fit(Z).n_clusters_ == 2
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        one = ManifoldRefine(k_range=(2, 4)).fit(np.ones((300, 3), np.float32))
    assert one.n_clusters_ == 1 and (one.predict(np.zeros((5, 3))) == 0).all()

def test_segment_manifold_head(model, cube):
    "Every pixel labelled by the head fitted on the sample; on these round clusters it is worse than k-means."
    cb, ref = cube
    s = segment(cb, model, k_range=(3, 3), refine='manifold', baseline=False, progress=False)
    assert s.n_clusters == 3 and s.centres.shape == (3, model.latent) and (s.counts > 0).all()
    assert 0.3 < adjusted_rand_score(ref.ravel(), s.labels.ravel()) < 0.99     # measured 0.60; k-means 1.000

# --- NaN/inf in a cube given to segment: the file, the pixel, the channel, all bad pixels counted --

def test_segment_nan_names_file_pixel_channel_and_count(model, tmp_path):
    a = spectra(80, seed=3)[0].reshape(10, 8, C)
    a[3, 6, 5], a[7, 2, 0], a[9, 7, 9] = np.nan, np.inf, -np.inf     # 3 bad pixels, in three row blocks
    p = write_cube(tmp_path/'holes.h5', a)
    line = (f'{p}: 3 of 80 pixels hold NaN or inf (first: pixel (row 3, column 6), channel 5); replace them')
    for run in (lambda: segment(p, model, chunk_rows=2, progress=False),
                lambda: segment_file(p, model.save(tmp_path/'m.pt'), tmp_path/'l.npy', chunk_rows=2, progress=False)):
        with pytest.raises(InputError) as e: run()
        assert str(e.value).startswith(line) and '\n' not in str(e.value)
    assert not (tmp_path/'l.npy').exists()
