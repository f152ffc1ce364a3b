"Synthetic plates written to disk: round trip through the core loaders, the truth table, seeds, bad arguments."
import numpy as np
import pandas as pd
import pytest

from sediment_cluster.core import InputError, iter_stacks
from sediment_cluster.particles.synth import TRUTH_COLUMNS, render_stack, synth_plates

SIZE = (256, 200)


@pytest.fixture(scope='module')
def plates(tmp_path_factory):
    return synth_plates(tmp_path_factory.mktemp('syn') / 'plates', n_stacks=3, random_state=11,
                        size=SIZE, progress=False)


def test_round_trip_png(plates):
    stacks = list(iter_stacks(plates, n_layers=6))
    assert [s.stack_id for s in stacks] == ['s0000', 's0001', 's0002']
    for i, s in enumerate(stacks):
        assert s.layers.shape == (6, SIZE[1], SIZE[0], 3)
        ref, _ = render_stack((11, i), s.stack_id, size=SIZE)
        np.testing.assert_array_equal(s.layers, ref.layers)


def test_truth_table(plates):
    t = pd.read_parquet(plates / 'truth.parquet')
    assert list(t.columns) == TRUTH_COLUMNS
    assert set(t.stack_id) == {'s0000', 's0001', 's0002'}
    for c in ['grain_id', 'x0', 'y0', 'x1', 'y1', 'touching_group']: assert pd.api.types.is_integer_dtype(t[c]), c
    assert t.chopped.dtype == bool
    assert pd.api.types.is_string_dtype(t.cls) and pd.api.types.is_string_dtype(t.stack_id)
    assert ((t.x0 >= 0) & (t.y0 >= 0) & (t.x1 <= SIZE[0]) & (t.y1 <= SIZE[1]) & (t.x0 < t.x1) & (t.y0 < t.y1)).all()
    assert (t.chopped == ((t.x0 == 0) | (t.y0 == 0) | (t.x1 == SIZE[0]) | (t.y1 == SIZE[1]))).all()
    assert (t.touching_group >= -1).all()
    for _, g in t[t.touching_group >= 0].groupby(['stack_id', 'touching_group']): assert len(g) >= 2
    assert not list(plates.glob('.*.tmp')) and not list(plates.glob('*/.*.tmp'))


def test_reproducible_from_seed(plates, tmp_path):
    again = synth_plates(tmp_path / 'again', n_stacks=2, random_state=11, size=SIZE, progress=False)
    for a, b in zip(iter_stacks(plates), iter_stacks(again)): np.testing.assert_array_equal(a.layers, b.layers)
    t1, t2 = pd.read_parquet(plates / 'truth.parquet'), pd.read_parquet(again / 'truth.parquet')
    pd.testing.assert_frame_equal(t1[t1.stack_id != 's0002'].reset_index(drop=True), t2)
    other = synth_plates(tmp_path / 'other', n_stacks=1, random_state=12, size=SIZE, progress=False)
    assert not np.array_equal(next(iter_stacks(other)).layers, next(iter_stacks(plates)).layers)


def test_jpg_and_layers(tmp_path):
    out = synth_plates(tmp_path / 'jpg', n_stacks=1, random_state=0, n_layers=3, size=SIZE, fmt='jpg',
                       plate='black', progress=False)
    assert sorted(p.name for p in (out / 's0000').iterdir()) == ['layer0.jpg', 'layer1.jpg', 'layer2.jpg']
    assert next(iter_stacks(out, n_layers=3)).layers.shape == (3, SIZE[1], SIZE[0], 3)


@pytest.mark.parametrize('kwargs, msg', [
    (dict(n_stacks=0), 'n_stacks=0: need at least 1 stack'),
    (dict(plate='pink'), "plate 'pink': unknown colour name; use one of green"),
    (dict(plate=(300, 0, 0)), '(R, G, B) triple of values 0–255'),
    (dict(fmt='bmp'), "fmt='bmp'"),
    (dict(random_state=-1), "random_state=-1"),
    (dict(density=0), 'density=0'),
    (dict(n_layers=0), 'n_layers=0'),
])
def test_bad_args(tmp_path, kwargs, msg):
    with pytest.raises(InputError, match=None) as e: synth_plates(tmp_path / 'bad', progress=False, **kwargs)
    assert msg in str(e.value) and '\n' not in str(e.value)
    assert not (tmp_path / 'bad').exists()


def test_refuses_non_empty_folder(plates):
    with pytest.raises(InputError, match='folder is not empty'): synth_plates(plates, n_stacks=1, progress=False)


def test_hard_plates(tmp_path):
    from sediment_cluster.particles.synth import HARD_CLASSES, make_scene
    out = synth_plates(tmp_path / 'hard', n_stacks=2, random_state=3, size=(320, 256), density=.3, classes='hard',
                       progress=False)
    t = pd.read_parquet(out / 'truth.parquet')
    assert list(t.columns) == TRUTH_COLUMNS and len(t) > 5
    assert set(t.cls) <= set(HARD_CLASSES)
    sc = make_scene(4, size=(640, 512), density=.3, classes='hard')
    assert {g.cls for g in sc.grains} == set(HARD_CLASSES)
    thick = {g.cls: g.thickness for g in sc.grains}
    assert thick['flake'] < .05 < .45 < thick['porous_sphere']


def test_easy_is_default():
    a, ta = render_stack(9, size=SIZE)
    b, tb = render_stack(9, size=SIZE, classes='easy')
    np.testing.assert_array_equal(a.layers, b.layers)
    pd.testing.assert_frame_equal(ta, tb)
    assert set(ta.cls) <= {'quartz', 'dark', 'foram', 'fragment', 'other'}


@pytest.mark.parametrize('kwargs, msg', [
    (dict(classes='medium'), "classes='medium': choose one of 'easy', 'hard'"),
    (dict(classes='hard', class_p=dict(quartz=1)), "class_p={'quartz': 1}: give non-negative weights for some of "
                                                   "rounded_grain"),
])
def test_bad_classes(tmp_path, kwargs, msg):
    with pytest.raises(InputError) as e: synth_plates(tmp_path / 'x', n_stacks=1, size=SIZE, progress=False, **kwargs)
    assert msg in str(e.value) and '\n' not in str(e.value)
    assert not (tmp_path / 'x').exists()
