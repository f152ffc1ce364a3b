"Property tests for `sediment_cluster.metrics`: invariances and bounds that must hold for any labelling."
import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from sediment_cluster.metrics import evaluate_labels

SCORES = ('accuracy', 'precision', 'recall', 'f1', 'tversky')

@st.composite
def label_pairs(draw, min_size=1, max_size=60, n_labels=6, unlabelled=True):
    "Two label vectors of one length, values in -1..n_labels-1 (-1 only if `unlabelled`), one item labelled in both."
    n = draw(st.integers(min_size, max_size))
    lo = -1 if unlabelled else 0
    pred = draw(arrays(np.int64, n, elements=st.integers(lo, n_labels - 1)))
    ref = draw(arrays(np.int64, n, elements=st.integers(lo, n_labels - 1)))
    i = draw(st.integers(0, n - 1))
    pred[i], ref[i] = max(pred[i], 0), max(ref[i], 0)   # keep one item labelled in both
    return pred, ref

def _scores(res):
    return {k: res[k] for k in SCORES + ('ari', 'nmi', 'confusion', 'n_pred', 'n_ref')}

@settings(max_examples=60, deadline=None)
@given(label_pairs(), st.permutations(range(6)), st.sampled_from(['hungarian', 'majority']))
def test_permuting_prediction_ids_changes_nothing(pair, perm, match):
    pred, ref = pair
    lut = np.array(list(perm) + [-1])          # index -1 -> -1: unlabelled stays unlabelled
    a, b = evaluate_labels(pred, ref, match=match), evaluate_labels(lut[pred], ref, match=match)
    for k in SCORES:
        np.testing.assert_allclose(b[k]['per_cluster'], a[k]['per_cluster'], atol=1e-12)
    assert b['n_pred'] == a['n_pred']
    np.testing.assert_allclose([b['ari'], b['nmi']], [a['ari'], a['nmi']], atol=1e-12)
    assert b['confusion'] == a['confusion']

@settings(max_examples=40, deadline=None)
@given(label_pairs(unlabelled=False), st.sampled_from(['hungarian', 'majority']))
def test_perfect_prediction_scores_one(pair, match):
    _, ref = pair
    res = evaluate_labels((ref * 7 + 3) % 11, ref, match=match)   # an injective relabelling of ref
    for k in SCORES:
        assert res[k]['macro'] == res[k]['weighted'] == 1.0 and set(res[k]['per_cluster']) == {1.0}
    np.testing.assert_allclose([res['nmi'], res['ari'], res['matching']['purity']], 1.0, atol=1e-12)
    C = np.array(res['confusion'])
    assert (C == np.diag(np.diag(C))).all() and C.sum() == len(ref)

@settings(max_examples=60, deadline=None)
@given(label_pairs(), st.integers(0, 5))
def test_unlabelled_items_are_ignored(pair, junk):
    pred, ref = pair
    keep = (pred != -1) & (ref != -1)
    a = evaluate_labels(pred, ref)
    b = evaluate_labels(pred[keep], ref[keep])
    pred2 = np.where(ref == -1, junk, pred)          # whatever is predicted where ref is unlabelled...
    c = evaluate_labels(pred2, ref)                  # ...does not matter
    for other in (b, c):
        assert _scores(other) == _scores(a)   # identical inputs after masking: bit-identical results
    assert np.sum(a['confusion']) == keep.sum()

@settings(max_examples=80, deadline=None)
@given(label_pairs(), st.floats(0, 2), st.floats(0, 2), st.sampled_from(['hungarian', 'majority']))
def test_scores_are_bounded(pair, alpha, beta, match):
    pred, ref = pair
    res = evaluate_labels(pred, ref, alpha=alpha, beta=beta, match=match)
    for k in SCORES:
        vals = res[k]['per_cluster'] + [res[k]['macro'], res[k]['weighted']]
        assert all(0.0 <= v <= 1.0 + 1e-12 for v in vals), (k, vals)
        assert len(res[k]['per_cluster']) == res['n_ref']
    assert -1.0 <= res['ari'] <= 1.0 and 0.0 <= res['nmi'] <= 1.0 + 1e-12
