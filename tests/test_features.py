"Feature sets in the store (write/read/list, staleness, the VAE's latent.npy as 'vae') and the handcrafted bank."
import json

import numpy as np
import pandas as pd
import pytest

from sediment_cluster.core import InputError
from sediment_cluster.particles.features import feature_sets, read_feature_set, write_feature_set
from sediment_cluster.particles.store import ParticleStore


def tiny_store(path, n=20, L=3, S=16, random_state=0):
    rng = np.random.default_rng(random_state)
    return ParticleStore.create(path, pd.DataFrame({'stack_id': ['s0'] * n}),
                                rng.integers(0, 255, (n, L, S, S, 3), dtype=np.uint8))


def test_round_trip_and_description(tmp_path):
    st = tiny_store(tmp_path/'s')
    X = np.arange(60, dtype=np.float64).reshape(20, 3)
    p = write_feature_set(st, 'abc', X, made_by='test', params=dict(a=1))
    assert p.name == 'features_abc.npy'
    np.testing.assert_array_equal(read_feature_set(st.path, 'abc'), X.astype(np.float32))
    d = feature_sets(st)['abc']
    assert d['dim'] == 3 and d['n_particles'] == 20 and d['made_by'] == 'test' and d['params'] == {'a': 1}
    assert d['stale'] == [] and d['file'] == 'features_abc.npy'
    assert json.loads((st.path/'features_abc.json').read_text())['name'] == 'abc'
    assert st.verify() == []                                     # both files recorded in the manifest


def test_vae_is_latent(tmp_path):
    st = tiny_store(tmp_path/'s')
    with pytest.raises(InputError, match='no latent features in the store; encode it first'):
        read_feature_set(st, 'vae')
    mu = np.ones((20, 5), np.float32)
    st.write_array('latent.npy', mu, sources=['crops.sums.npy'])
    np.testing.assert_array_equal(read_feature_set(st), mu)     # the default set is 'vae'
    assert list(feature_sets(st)) == ['vae']
    with pytest.raises(InputError, match="'vae' is latent.npy"): write_feature_set(st, 'vae', mu)


def test_stale_follows_sources(tmp_path):
    st = tiny_store(tmp_path/'s')
    write_feature_set(st, 'a', np.ones((20, 2)))
    write_feature_set(st, 'b', np.ones((20, 2)), sources=['features_a.npy'])
    write_feature_set(st, 'a', np.zeros((20, 2)))                # a changed: b is stale, a is not
    assert feature_sets(st)['b']['stale'] == ['features_a.npy'] and feature_sets(st)['a']['stale'] == []
    with pytest.raises(InputError, match='computed from an earlier features_a.npy'): read_feature_set(st, 'b')


@pytest.mark.parametrize('name, X, msg', [
    ('x', np.ones((19, 2)), "feature set 'x': shape (19, 2), expected (20, D)"),
    ('x', np.ones(20), "feature set 'x': shape (20,)"),
    ('x', np.full((20, 2), np.nan), '20 rows with NaN'),
    ('Bad Name', np.ones((20, 2)), "feature set name 'Bad Name'"),
])
def test_bad_input(tmp_path, name, X, msg):
    st = tiny_store(tmp_path/'s')
    with pytest.raises(InputError) as e: write_feature_set(st, name, X)
    assert msg in str(e.value) and '\n' not in str(e.value)
    assert not list(st.path.glob('features_*'))



@pytest.mark.parametrize('name', ['features_abc.json', 'latent.json'])
def test_damaged_description_is_one_line(tmp_path, name):
    "A truncated description (of a feature set, or the VAE's latent.json) names the file, not a JSONDecodeError."
    st = tiny_store(tmp_path/'s')
    write_feature_set(st, 'abc', np.ones((20, 2)))
    st.write_array('latent.npy', np.ones((20, 5), np.float32), sources=['crops.sums.npy'])
    (st.path/'latent.json').write_text('{"latent": 5}')
    st.record('latent.json', sources=['latent.npy'])
    assert set(feature_sets(st)) == {'abc', 'vae'}
    p = st.path/name
    p.write_bytes(p.read_bytes()[:5])
    with pytest.raises(InputError, match=name.replace('.', r'\.')): feature_sets(st)

def test_missing_set_names_the_others(tmp_path):
    st = tiny_store(tmp_path/'s')
    write_feature_set(st, 'a', np.ones((20, 2)))
    with pytest.raises(InputError, match="no feature set 'zz' in the store; the store has: a"):
        read_feature_set(st, 'zz')


# ---------------------------------------------------------------- the handcrafted bank on a real (small) store
@pytest.fixture(scope='module')
def hard_store(tmp_path_factory):
    from sediment_cluster.particles.store import extract_store
    from sediment_cluster.particles.synth import synth_plates
    root = tmp_path_factory.mktemp('hard')
    plates = synth_plates(root/'plates', n_stacks=2, random_state=4, size=(320, 256), density=.3, classes='hard',
                          progress=False)
    return extract_store(plates, root/'store', size=40, workers=1, progress=False, pixel_size_um=2.)


def test_handcrafted_table(hard_store):
    from sediment_cluster.particles.features import (COLOUR, MORPHOMETRY, OUTLINE, TEXTURE, focus_columns,
                                                     handcrafted_features)
    df = handcrafted_features(hard_store, progress=False)
    cols = ['particle_id', *MORPHOMETRY, *OUTLINE, 'border', *TEXTURE, *COLOUR, *sum(focus_columns(6).values(), [])]
    assert list(df.columns) == cols and len(df) == len(hard_store)
    assert (df.particle_id == hard_store.table.particle_id).all()
    assert np.isfinite(df[cols[1:]].to_numpy(float)).all()
    assert ((df.dof >= 1) & (df.dof <= 6) & (df.best_layer >= 0) & (df.best_layer < 6)).all()
    assert ((df.solidity > 0) & (df.solidity <= 1.01) & (df.feret_min <= df.feret_max)).all()
    px = handcrafted_features(hard_store, pixel_size_um=1., progress=False)   # lengths scale with the pixel size
    np.testing.assert_allclose(df.esd, 2 * px.esd, rtol=1e-6)
    np.testing.assert_allclose(df.area, 4 * px.area, rtol=1e-6)
    np.testing.assert_allclose(df.circularity, px.circularity, rtol=1e-6)
    np.testing.assert_allclose(df[OUTLINE], px[OUTLINE], rtol=1e-6)                 # outline columns: no lengths
    assert ((df.border >= 0) & (df.border < 1) & (df.rim_p10 <= df.rim_p90)).all()
    assert ((df.flat_sag8 >= 0) & (df.flat_sag8 <= .5) & (df.defect_n >= 0)).all()


def test_encode_and_fuse(hard_store, tmp_path):
    import shutil
    from sediment_cluster.particles.features import encode_handcrafted, fuse_feature_sets, handcrafted_matrix
    st = ParticleStore(shutil.copytree(hard_store.path, tmp_path/'s'))
    encode_handcrafted(st, progress=False)
    X = read_feature_set(st, 'handcrafted')
    np.testing.assert_allclose(X, handcrafted_matrix(st.read_table('handcrafted.parquet')), atol=1e-6)
    groups = feature_sets(st)['handcrafted']['params']['groups']
    assert groups == ['morphometry', 'outline', 'texture', 'colour', 'focus']
    write_feature_set(st, 'other', np.random.default_rng(0).normal(size=(len(st), 5)))
    fuse_feature_sets(st, ['other', 'handcrafted'], n_components=4)
    assert read_feature_set(st, 'fused').shape == (len(st), 4)
    encode_handcrafted(st, groups=['focus'], progress=False)                 # an input changed: fused is stale
    assert feature_sets(st)['fused']['stale'] == ['features_handcrafted.npy']
    with pytest.raises(InputError, match='groups=\\[.bogus.\\]: choose among morphometry'):
        encode_handcrafted(st, groups=['bogus'], progress=False)
    with pytest.raises(InputError, match='weights=\\[1\\]: give one non-negative weight per feature set \\(2\\)'):
        fuse_feature_sets(st, ['other', 'handcrafted'], weights=[1])
    assert st.verify() == []


def test_matrix_weights(hard_store):
    "The default matrix is the plain standardised columns times the two learnt weights; each can be turned off."
    from sediment_cluster.particles.features import (HANDCRAFTED_GROUPS, _group_columns, agreement_weights,
                                                     collinear_weights, handcrafted_features, handcrafted_matrix,
                                                     standardise)
    df = handcrafted_features(hard_store, progress=False)
    plain = handcrafted_matrix(df, collinear=None, agreement=False)
    cols = _group_columns(df)
    assert plain.shape == (len(df), sum(len(cols[g]) for g in HANDCRAFTED_GROUPS))
    t0 = len(cols['morphometry']) + len(cols['outline'])
    np.testing.assert_allclose(plain[:, t0:t0 + len(cols['texture'])], standardise(df[cols['texture']].to_numpy()))
    w = collinear_weights(plain)
    assert w.min() < 1 and w.max() == 1                    # the size columns are near-copies, others are not
    sizes = [len(cols[g]) for g in HANDCRAFTED_GROUPS]
    a = np.concatenate(agreement_weights(np.split(plain * w, np.cumsum(sizes)[:-1], 1)))
    assert ((a >= 0) & (a <= 1)).all() and a.std() > 0
    np.testing.assert_allclose(handcrafted_matrix(df), plain * w * a, atol=1e-5)
    np.testing.assert_allclose(handcrafted_matrix(df, ['focus']), handcrafted_matrix(df, ['focus'], agreement=False))
    with pytest.raises(InputError, match='collinear=0: give a correlation in'):
        handcrafted_matrix(df, collinear=0)


def test_handcrafted_without_boxes(tmp_path):
    "A store made by `create` without boxes: lengths in crop pixels; a flat crop falls back to the whole crop."
    from sediment_cluster.particles.features import handcrafted_features
    crops = np.zeros((2, 3, 32, 32, 3), np.uint8) + np.uint8([50, 190, 60])
    crops[0, :, 8:24, 8:24] = 220                                   # a 16 × 16 square
    st = ParticleStore.create(tmp_path/'s', pd.DataFrame({'stack_id': ['s0', 's0']}), crops)
    df = handcrafted_features(st, progress=False)
    assert df.area[0] == 256 and abs(df.feret_min[0] - 16) < 1 and df.area[1] == 32 * 32
    assert np.isfinite(df.drop(columns='particle_id').to_numpy(float)).all()


def test_outline_sees_cuts_not_the_crop_edge():
    "A shaded disc cut by a straight edge: flat chord, bright rim; the same disc cut by the crop: its own outline."
    from sediment_cluster.particles.features import OUTLINE, outline_features
    yy, xx = np.mgrid[:80, :80] - 39.5
    nz = np.sqrt(np.clip(1 - (xx ** 2 + yy ** 2) / 30 ** 2, 0, 1))
    disc, grey = nz > 0, np.where(nz > 0, 60 + 160 * nz, 20.)
    whole, cut = outline_features(disc, grey), outline_features(disc & (xx < 12), grey)
    edge = outline_features(disc[:, 30:], grey[:, 30:])
    assert set(whole) == {*OUTLINE, 'border'} and whole['border'] == 0 and edge['border'] > .2
    assert cut['flat_sag16'] < .02 < .15 < whole['flat_sag16'] and cut['curv4_sharp'] > whole['curv4_sharp']
    assert cut['rim_bright'] > .1 and whole['rim_bright'] == 0 == edge['rim_bright'] and whole['rim_med'] < .8
    assert abs(edge['flat_sag16'] - whole['flat_sag16']) < .04 and edge['curv4_run'] < .1 < cut['curv4_run']
    blob = outline_features(np.ones((3, 3), bool), np.ones((3, 3)))     # degenerate: finite values, no error
    assert np.isfinite(list(blob.values())).all()


def test_only_frame_sides_are_cuts(tmp_path):
    "The same half disc: its straight side is left out when it lies on the frame's edge, counted when it does not."
    from sediment_cluster.particles.features import frame_sides, handcrafted_features
    yy, xx = np.mgrid[:64, :64] - 31.5
    nz = np.sqrt(np.clip(1 - ((xx + 31.5) ** 2 + yy ** 2) / 30 ** 2, 0, 1))   # a disc centred on the left side
    crop = np.where(nz[..., None] > 0, (60 + 160 * nz)[..., None] * np.ones(3), [50, 190, 60]).astype(np.uint8)
    crops = np.stack([np.stack([crop] * 3)] * 3)
    table = pd.DataFrame({'stack_id': ['s0'] * 3, 'x0': [0, 200, 300], 'y0': [100, 100, 400], 'x1': [64, 264, 364],
                          'y1': [164, 164, 464], 'chopped': [True, False, False]})   # the third: the frame's extent
    assert frame_sides(table).tolist() == [[True, False, False, False], [False] * 4, [False] * 4]
    df = handcrafted_features(ParticleStore.create(tmp_path/'s', table, crops), progress=False)
    on_frame, in_box = df.iloc[0], df.iloc[1]
    assert in_box.flat_sag16 < .02 < .1 < on_frame.flat_sag16          # the straight side: a cut only off the frame
    assert in_box.rim_bright > on_frame.rim_bright and on_frame.border == in_box.border


def test_clumped_particles_are_described_by_their_largest_grain(tmp_path):
    "The same two-grain crop: flagged clumped, its morphometry is the big grain's; not flagged, the pair's."
    from sediment_cluster.particles.features import handcrafted_features
    yy, xx = np.mgrid[:64, :64]
    big, small = (yy - 32) ** 2 + (xx - 24) ** 2 < 18 ** 2, (yy - 32) ** 2 + (xx - 50) ** 2 < 10 ** 2
    crop = np.where((big | small)[..., None], [200, 180, 150], [50, 190, 60]).astype(np.uint8)
    table = pd.DataFrame({'stack_id': ['s0'] * 2, 'x0': [100, 300], 'y0': [100, 100], 'x1': [164, 364],
                          'y1': [164, 164], 'chopped': [False, False], 'clumped': [True, False]})
    df = handcrafted_features(ParticleStore.create(tmp_path/'s', table, np.stack([np.stack([crop] * 3)] * 2)),
                              progress=False)
    assert abs(df.area[0] - big.sum()) < .06 * big.sum() and abs(df.area[1] - (big | small).sum()) < .06 * big.sum()
    assert df.solidity[0] > .95 > df.solidity[1]                        # one round grain against a dumbbell
