"IKMeans and silhouettes: agreement with scikit-learn, the soft silhouette, the stop rule and bad input."
import numpy as np, pytest, torch
import torch.nn.functional as F
from hypothesis import assume, given, settings, strategies as st
from sklearn.datasets import make_blobs
from sklearn.metrics import silhouette_samples, silhouette_score
from sediment_cluster.core import InputError
from sediment_cluster.ikmeans import IKMeans, silhouette, silhouette_samples_t, soft_silhouette_t

@pytest.fixture(scope='module')
def blobs(): return make_blobs(3000, 4, centers=4, cluster_std=2., random_state=1)

@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 60), k=st.integers(2, 5), d=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_soft_silhouette_of_one_hot_is_the_silhouette(n, k, d, seed):
    rng = np.random.default_rng(seed)
    X, lab = rng.normal(size=(n, d)), rng.integers(0, k, n)
    if len(np.unique(lab)) < 2: lab[0], lab[1] = 0, 1
    _, lab = np.unique(lab, return_inverse=True)
    assume(lab.max() + 1 < n)                                              # sklearn needs 2 ≤ k ≤ n − 1
    got = soft_silhouette_t(torch.as_tensor(X, dtype=torch.float64), F.one_hot(torch.as_tensor(lab)).double()).numpy()
    np.testing.assert_allclose(got, silhouette_samples(X, lab), atol=1e-9)

def test_soft_silhouette_gradients_are_finite_with_empty_clusters():
    X = torch.randn(30, 2, requires_grad=True)
    P = torch.zeros(30, 4)
    P[:15, 0] = 1
    P[15:, 1] = 1  # clusters 2 and 3 empty
    P = (0.98 * P + 0.01).requires_grad_()
    soft_silhouette_t(X, P).mean().backward()
    assert torch.isfinite(X.grad).all() and torch.isfinite(P.grad).all()

def test_exact_silhouette_agrees_with_sklearn(blobs):
    X, y = blobs
    assert silhouette(X, y, 'exact')[0] == pytest.approx(silhouette_score(X, y), abs=1e-5)
    ours = silhouette_samples_t(torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)).numpy()
    np.testing.assert_allclose(ours, silhouette_samples(X, y), atol=2e-4)

def test_sampled_silhouette_is_within_its_standard_error(blobs):
    X, y = blobs
    exact = silhouette_score(X, y)
    for seed in range(3):
        m, se = silhouette(X, y, 'sampled', sample_size=600, random_state=seed)
        assert se > 0 and abs(m - exact) < 4 * se

def test_stop_rule_ends_early_with_the_same_k(blobs):
    X, _ = blobs
    full, early = IKMeans(random_state=0).fit(X), IKMeans(patience=2, random_state=0).fit(X)
    assert early.n_clusters_ == full.n_clusters_ == 4 and max(early.scores_) == 6

@pytest.mark.parametrize('kw,msg', [(dict(k_range=(4, 2)), 'k_min <= k_max'), (dict(k_range=(0, 3)), 'k_min <= k_max'),
                                    (dict(k_range=(1, 3)), 'start at k >= 2'), (dict(k_range='2-12'), 'integers'),
                                    (dict(k_range=(2, 50)), 'k=50 is more than the 40 samples'),
                                    (dict(n_clusters=41), 'n_clusters=41')])
def test_bad_k(blobs, kw, msg):
    with pytest.raises(InputError, match=msg): IKMeans(**kw).fit(blobs[0][:40])

def test_nan_latents_are_refused(blobs):
    X = blobs[0].copy()
    X[[5, 9], 2] = np.nan
    with pytest.raises(InputError, match=r'2 rows with NaN or infinite values \(first: row 5\)'): IKMeans().fit(X)

def test_constant_data_is_one_cluster_with_a_warning():
    with pytest.warns(UserWarning, match='identical'):
        km = IKMeans(random_state=0).fit(np.full((100, 3), 7., np.float32))
    assert km.n_clusters_ == 1 and (km.predict(np.ones((4, 3))) == 0).all()
