"""Extraction under real light: strongly vignetted plates of every colour (corners at ~50 % of the centre's light),
blank vignetted plates, and the per-stack choice of the background mode."""
import warnings

import pytest

from sediment_cluster.core import FocalStack
from sediment_cluster.particles.extract import (detect_background, evaluate_extraction, extract_particles,
                                                work_layers)
from sediment_cluster.particles.synth import label_map, make_scene, render_layers, scene_truth

SIZE = (640, 512)


def _stacks(plate, n, seed=43, vignette=.5):
    "`n` stacks on `plate` whose corners get 1 − `vignette` of the centre's light, with truth and label maps."
    out = []
    for i in range(n):
        sc = make_scene((seed, i), size=SIZE, plate=plate, vignette=vignette)
        out.append((FocalStack(render_layers(sc, (seed, i, 1)), f's{i}'), scene_truth(sc, f's{i}'), label_map(sc)))
    return out


def _score(stacks, **kw):
    return evaluate_extraction([(extract_particles(st, size=16, **kw)[0], t, lab) for st, t, lab in stacks])


# Bars a little below the values measured on seed 43 (12 stacks, 67 isolated grains each; recall / precision:
# green 0.985 / 0.987, black 0.970 / 0.987, white 0.881 / 0.944, grey 0.955 / 0.924). The notebook has the
# table on other seeds. The 0.97 recall is not reached on white (and grey) plates: not asserted.
@pytest.mark.parametrize('plate, recall, precision', [('green', .97, .97), ('black', .95, .97),
                                                      ('white', .86, .92), ('grey', .93, .9)])
def test_vignetted_plates_default(plate, recall, precision):
    s = _score(_stacks(plate, 12))
    assert s['n_isolated'] >= 40, s
    assert s['recall'] >= recall and s['precision'] >= precision, s


def test_outlines_help_on_grey():
    "The outline cue (flat-field + edges, the default on a grey plate) against the quadratic field alone."
    st = _stacks('grey', 12)
    new, old = _score(st), _score(st, background='auto')     # measured: 0.955 / 0.924 against 0.716 / 0.690
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
