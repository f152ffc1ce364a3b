"""Tests for `sediment_cluster.cubes.evaluate`: scores on label maps against scikit-learn, known cases, matched maps
under relabelling (hypothesis), the PSNR degradation, segmenters, the noise study, the baseline table and
image-independent training (`cross_cube_protocol`: each cube held out, trained on the others).
Invariances of `evaluate_labels` itself are in test_metrics_props.py."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.decomposition import PCA
from sklearn.metrics import confusion_matrix, jaccard_score, precision_recall_fscore_support

from sediment_cluster.core import InputError
from sediment_cluster.cubes.datacube import write_cube
from sediment_cluster.cubes.deepcluster import DeepSpectralClustering
from sediment_cluster.cubes.evaluate import (CubeSegmenter, add_noise, check_reference, cluster_masks, cluster_table,
                                       compare_baselines, compare_segmenters, cross_cube_protocol, cross_cube_summary,
                                       matched_map,
                                       mislabelled, noise_study, plot_cluster_check, plot_noise_maps, psnr,
                                       UMAPEmbedding)
from sediment_cluster.ikmeans import IKMeans
from sediment_cluster.metrics import UNMATCHED, contingency, evaluate_labels


def noisy_maps(seed, n_ref=4, n_pred=5, shape=(30, 40), flip=0.25, unlabelled=0.05):
    "A reference map, and a prediction that renames its clusters, flips a fraction of pixels and has −1 holes."
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, n_ref, shape)
    pred = np.where(rng.random(shape) < flip, rng.integers(0, n_pred, shape), (ref * 3 + 1) % n_pred)
    ref[rng.random(shape) < unlabelled] = -1
    pred[rng.random(shape) < unlabelled] = -1
    return pred, ref


@pytest.mark.parametrize('match', ['hungarian', 'majority'])
@pytest.mark.parametrize('seed,n_pred', [(0, 5), (1, 3), (2, 4)])
def test_scores_match_sklearn_after_matching(seed, n_pred, match):
    pred, ref = noisy_maps(seed, n_pred=n_pred)
    res = evaluate_labels(pred, ref, match=match)
    keep = (pred != -1) & (ref != -1)
    y, yhat = ref[keep], matched_map(pred, ref, match)[keep]     # independent: sklearn on the matched labels
    labels = res['matching']['ref_labels']
    for avg, key in [(None, 'per_cluster'), ('macro', 'macro'), ('weighted', 'weighted')]:
        P, R, F, _ = precision_recall_fscore_support(y, yhat, labels=labels, average=avg, zero_division=0)
        np.testing.assert_allclose(res['precision'][key], P)
        np.testing.assert_allclose(res['recall'][key], R)
        np.testing.assert_allclose(res['f1'][key], F)
    assert res['confusion'] == confusion_matrix(y, yhat, labels=res['matching']['confusion_labels']).tolist()
    J = jaccard_score(y, yhat, labels=labels, average=None, zero_division=0)
    tversky = lambda a, b: evaluate_labels(pred, ref, a, b, match)['tversky']['per_cluster']
    np.testing.assert_allclose(tversky(1, 1), J)       # α = β = 1: Jaccard
    F = precision_recall_fscore_support(y, yhat, labels=labels, zero_division=0)[2]
    np.testing.assert_allclose(tversky(.5, .5), F)     # α = β = ½: Dice = F1


def test_masks_and_mislabelled_agree_with_counts():
    pred, ref = noisy_maps(3, n_pred=6)
    res = evaluate_labels(pred, ref)
    labels, P, T, valid = cluster_masks(pred, ref)
    assert labels.tolist() == res['matching']['ref_labels']
    for (p, t), c in zip(zip(P, T), res['matching']['counts']):
        counts = [(p & t).sum(), (p & ~t).sum(), (~p & t).sum(), (~p & ~t & valid).sum()]
        assert counts == [c['tp'], c['fp'], c['fn'], c['tn']]
    bad = mislabelled(pred, ref)
    C = np.array(res['confusion'])
    assert (bad == 1).sum() == C.sum() - np.trace(C) and (bad == -1).sum() == (~valid).sum()


def test_known_case_by_hand():
    # reference: left half 0, right half 1 (4×4); prediction: ids 8/9, one 0-pixel predicted as 1, one extra cluster 5
    ref = np.array([[0, 0, 1, 1]] * 4)
    pred = np.array([[8, 8, 9, 9], [8, 9, 9, 9], [8, 8, 9, 9], [8, 8, 9, 5]])
    res = evaluate_labels(pred, ref)
    assert res['matching']['pairs'] == [[8, 0], [9, 1]] and res['matching']['unmatched_pred'] == [5]
    assert res['matching']['counts'] == [dict(tp=7, fp=0, fn=1, tn=8), dict(tp=7, fp=1, fn=1, tn=7)]
    np.testing.assert_allclose(res['tversky']['per_cluster'], [7 / (7 + .7 * 1), 7 / (7 + .7 + .3)])
    np.testing.assert_allclose(res['f1']['per_cluster'], [14 / 15, 14 / 16])
    assert matched_map(pred, ref)[3, 3] == UNMATCHED and mislabelled(pred, ref).sum() == 2
    tab = cluster_table(res, names=['left', 'right'])
    assert tab.loc['right', 'support'] == 8
    assert tab.loc['weighted', 'tversky'] == pytest.approx(res['tversky']['weighted'])


@settings(max_examples=60, deadline=None)
@given(arrays(np.int64, (6, 7), elements=st.integers(-1, 4)), arrays(np.int64, (6, 7), elements=st.integers(0, 3)),
       st.permutations(range(5)), st.sampled_from(['hungarian', 'majority']))
def test_matched_map_ignores_prediction_ids(pred, ref, perm, match):
    pred[0, 0] = max(pred[0, 0], 0)
    lut = np.array(list(perm) + [-1])
    a, b = matched_map(pred, ref, match), matched_map(lut[pred], ref, match)
    assert ((a == -1) == (pred == -1)).all()
    bad_a, bad_b = mislabelled(pred, ref, match), mislabelled(lut[pred], ref, match)
    assert (bad_a == 1).sum() == (bad_b == 1).sum() and ((bad_a == -1) == (bad_b == -1)).all()
    C = contingency(pred, ref)[0]
    if len({tuple(c) for c in C.T}) == C.shape[1]:   # no two predicted clusters with the same overlaps: no tie to break
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(bad_a, bad_b)


@settings(max_examples=30, deadline=None)
@given(st.floats(-5, 60), st.integers(0, 2**31 - 1), st.sampled_from([np.uint16, np.float32, np.float64]))
def test_add_noise_hits_target_psnr(target, seed, dtype):
    cube = (np.random.default_rng(seed).random((6, 5, 16)) * 300).astype(dtype)
    noisy = add_noise(cube, target, random_state=seed)
    assert abs(psnr(cube, noisy) - target) < 0.1
    assert noisy.shape == cube.shape and noisy.dtype == (np.float64 if dtype == np.float64 else np.float32)


def test_psnr_definition_and_bad_input():
    clean = np.zeros((2, 2, 4))
    clean[0, 0, 0] = 10
    noisy = clean + 0.5                                  # MSE 0.25, peak 10: 10·log10(100 / 0.25)
    assert psnr(clean, noisy) == pytest.approx(10 * np.log10(400))
    assert psnr(clean, clean) == np.inf
    with pytest.raises(InputError, match='shapes'): psnr(clean, clean[0])
    with pytest.raises(InputError, match='finite level'): add_noise(clean, np.inf)
    assert not np.array_equal(add_noise(clean, 20, 1), add_noise(clean, 20, 2))


def blob_cube(n_classes=3, size=16, C=24, counts=200., seed=0):
    "A small cube whose classes (vertical bands) have Poisson spectra with one peak each."
    rng = np.random.default_rng(seed)
    ref = np.repeat(np.arange(size) * n_classes // size, size).reshape(size, size).T
    centres = (np.arange(n_classes) + 1) * C / (n_classes + 1)
    means = np.stack([np.exp(-.5 * ((np.arange(C) - c) / 1.5) ** 2) for c in centres])
    cube = rng.poisson(counts * means[ref] / means.sum(1)[ref][..., None]).astype(np.float32)
    return cube, ref


def test_segmenter_fits_per_cube_and_freezes():
    cube, ref = blob_cube()
    seg = CubeSegmenter(IKMeans(k_range=(2, 5), random_state=0), PCA(3, random_state=0))
    lab = seg(cube)
    assert lab.shape == ref.shape and evaluate_labels(lab, ref)['f1']['weighted'] == 1.0
    frozen = seg.frozen(fit_clusterer=False)
    assert frozen.encoder is seg.encoder_ and frozen.clusterer is seg.clusterer_
    np.testing.assert_array_equal(frozen(cube[:5]), lab[:5])        # applied as fitted, to part of the cube
    with pytest.raises(InputError, match='H×W×C'): seg(cube[0])
    with pytest.raises(InputError, match='same cube'): check_reference(ref[:3], cube.shape[:2])


def test_noise_study_with_a_frozen_segmenter():
    cube, ref = blob_cube(seed=1)
    seg = CubeSegmenter(IKMeans(k_range=(2, 5), random_state=0), PCA(3, random_state=0))
    seg(cube)
    calls = []
    def counting(c):
        calls.append(c.shape)
        return seg.frozen(fit_clusterer=False)(c)
    study = noise_study(cube, ref, counting, psnr_levels=(30, 10, 0), random_state=3, progress=False)
    assert calls == [cube.shape] * 4 and list(study.table.index) == [np.inf, 30, 10, 0]
    np.testing.assert_allclose(study.table.psnr.values[1:], [30, 10, 0], atol=0.1)
    assert study.table.f1_w.iloc[0] == 1.0 and study.table.f1_w.iloc[-1] < 0.9
    again = noise_study(cube, ref, counting, psnr_levels=(30, 10, 0), random_state=3, progress=False)
    for k in study.labels: np.testing.assert_array_equal(study.labels[k], again.labels[k])
    assert len(plot_noise_maps(study).axes) == 3 * 5


def test_comparison_table_and_bad_segmenter():
    cube, ref = blob_cube(seed=2)
    shift = np.roll(ref, 1, axis=1)                                  # a precomputed map: one column off
    cmp = compare_baselines(cube, ref, {'shifted': shift}, k_range=(2, 5), methods=('pca',), progress=False)
    t = cmp.table
    assert list(t.index) == ['shifted', 'PCA + IKMeans'] and np.isnan(t.loc['shifted', 'seconds'])
    assert t.loc['PCA + IKMeans', 'f1_w'] == 1.0 and t.loc['shifted', 'f1_w'] < 1.0
    want = {'k', 'accuracy_w', 'precision_w', 'recall_w', 'f1_w', 'tversky_w', 'ari', 'nmi', 'unmatched'}
    assert want <= set(t.columns)
    with pytest.raises(InputError, match="segmenter 'flat'"):
        compare_segmenters(cube, ref, {'flat': lambda c: np.zeros(c.shape[0] * c.shape[1], int)}, progress=False)
    with pytest.raises(InputError, match="unknown"): compare_baselines(cube, ref, methods=('tsne',), progress=False)
    with pytest.raises(InputError, match='transform'): UMAPEmbedding().transform(np.zeros((5, 2)))
    fig = plot_cluster_check(cmp.labels['shifted'], ref)
    assert len(fig.axes) == 3 * 4


# Image-independent training: each cube held out, trained on the others.
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

def test_summary_over_seeds():
    "Per cube: means over the seeds, the gap's spread, and the share of seeds within the tolerance."
    import pandas as pd
    gaps = {'a': [0.01, 0.2, 0.04], 'b': [0.3, 0.1, 0.06]}
    rows = [dict(cube=c, seed=s, f1_others=0.9 - g, f1_self=0.9, f1_pca=0.8, gap=g)
            for s in range(3) for c, g in ((c, gaps[c][s]) for c in 'ab')]
    summary = cross_cube_summary(pd.DataFrame(rows).set_index('cube'), tol=0.05)
    assert list(summary.index) == ['a', 'b']
    np.testing.assert_allclose(summary.gap, [np.mean(gaps['a']), np.mean(gaps['b'])])
    np.testing.assert_allclose(summary.gap_sd, [np.std(gaps['a'], ddof=1), np.std(gaps['b'], ddof=1)])
    np.testing.assert_allclose(summary.within_tol, [2 / 3, 0])
    assert summary.n_seeds.tolist() == [3, 3] and summary.gap_max.tolist() == [0.2, 0.3]
    with pytest.raises(InputError, match='columns'): cross_cube_summary(pd.DataFrame({'gap': [0.1]}))

def test_bad_input(run, tmp_path):
    d, paths, refs, _ = run
    with pytest.raises(InputError, match='give at least 2 cube files'):
        cross_cube_protocol(paths[:1], refs[:1], tmp_path)
    with pytest.raises(InputError, match='one reference per cube'): cross_cube_protocol(paths, refs[:2], tmp_path)
    with pytest.raises(InputError, match='reference of cube1.npy'):
        cross_cube_protocol(paths, [refs[0], refs[1][:4], refs[2]], tmp_path)
    with pytest.raises(InputError, match='n_seeds=1.5'): cross_cube_protocol(paths, refs, tmp_path, n_seeds=1.5)
