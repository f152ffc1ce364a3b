"""Extraction under real light: strongly vignetted plates of every colour (corners at ~50 % of the centre's light),
blank vignetted plates, and the per-stack choice of the background mode."""
import warnings

import pytest

from sediment_cluster.core import FocalStack
import sediment_cluster.particles.extract as extract
from sediment_cluster.particles.extract import (box_iou, detect_background, evaluate_extraction, extract_particles,
                                                work_layers)
from sediment_cluster.particles.synth import label_map, make_scene, render_layers, scene_truth

SIZE = (640, 512)
B = ['x0', 'y0', 'x1', 'y1']


def _stack(plate, seed, i, vignette=.5):
    "Stack `(seed, i)` on `plate` whose corners get 1 − `vignette` of the centre's light, with truth and label map."
    sc = make_scene((seed, i), size=SIZE, plate=plate, vignette=vignette)
    return FocalStack(render_layers(sc, (seed, i, 1)), f's{i}'), scene_truth(sc, f's{i}'), label_map(sc)


def _stacks(plate, n, seed=43, vignette=.5):
    return [_stack(plate, seed, i, vignette) for i in range(n)]


def _score(stacks, **kw):
    return evaluate_extraction([(extract_particles(st, size=16, **kw)[0], t, lab) for st, t, lab in stacks])


# Bars a little below the values measured on seed 43 (12 stacks, 67 isolated grains each; recall / precision:
# green 0.985 / 0.987, black 0.985 / 0.987 (0.970 / 0.987 before the focus box), white 0.881 / 0.944, grey
# 0.955 / 0.924). The notebook has the table on other seeds. The 0.97 recall is not reached on white
# (and grey) plates: not asserted.
@pytest.mark.parametrize('plate, recall, precision', [('green', .97, .97), ('black', .97, .97),
                                                      ('white', .86, .92), ('grey', .93, .9)])
def test_vignetted_plates_default(plate, recall, precision):
    s = _score(_stacks(plate, 12))
    assert s['n_isolated'] >= 40, s
    assert s['recall'] >= recall and s['precision'] >= precision, s


def test_outlines_help_on_grey():
    "The outline cue (flat-field + edges, the default on a grey plate) against the quadratic field alone."
    st = _stacks('grey', 12)
    new, old = _score(st), _score(st, background='auto')     # measured: 0.970 / 0.925 against 0.716 / 0.690
    assert new['recall'] > old['recall'] + .15 and new['precision'] > old['precision'] + .15, (new, old)


@pytest.mark.parametrize('plate', ['green', 'black', 'white', 'grey'])
def test_blank_vignetted_plate(plate):
    "An empty, strongly vignetted plate: no particles and no warning, whatever the colour."
    sc = make_scene(7, size=SIZE, plate=plate, vignette=.5)
    sc.grains = []
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        df, crops = extract_particles(FocalStack(render_layers(sc, 8), 'blank'), size=16)
    assert len(df) == 0 and crops.shape == (0, 6, 16, 16, 3)


@pytest.mark.parametrize('plate, mode', [('green', 'saturation'), ('blue', 'saturation'), ('black', 'flat'),
                                         ('white', 'flat'), ('grey', 'flat')])
def test_detect_background(plate, mode):
    st = _stacks(plate, 1)[0][0]
    assert detect_background(work_layers(st.layers)[0]) == mode


@pytest.mark.parametrize('plate, stack, grain', [('black', 17, 4), ('white', 13, 1), ('white', 8, 7), ('grey', 19, 1)])
def test_faint_grains_in_dim_corners(plate, stack, grain):
    "Faint grains where the vignette dims the light (seed 131): found since the `flat` floor is 4.5 ΔE (6 missed them)."
    st, truth, _ = _stack(plate, 131, stack)
    df, _ = extract_particles(st, size=16)
    assert box_iou(df[B], truth.loc[[grain], B]).max(initial=0) >= .7, (truth.loc[grain], df[B])


@pytest.mark.parametrize('seed, stack, grain', [(43, 13, 1), (97, 12, 0), (5, 0, 4)])
def test_focus_box_against_halo(monkeypatch, seed, stack, grain):
    "Dark grains on black whose widest box is a blurred layer's halo (IoU 0.58-0.70): the focus layer's box fits."
    st, truth, _ = _stack('black', seed, stack)
    iou = lambda: box_iou(extract_particles(st, size=16)[0][B], truth.loc[[grain], B]).max(initial=0)
    assert iou() >= .7
    monkeypatch.setitem(extract.FOCUS_BOX, 'flat', None)   # the widest layer box, as before
    assert iou() < .7
