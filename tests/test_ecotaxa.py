"""EcoTaxa archives: the export passes the import rules, a broken archive gets one line per rule it breaks,
and an EcoTaxa TSV with expert labels seeds the classes of a store."""
import shutil, zipfile

import numpy as np
import pandas as pd
import pytest

from sediment_cluster.core import InputError
from sediment_cluster.particles.ecotaxa import (ecotaxa_problems, export_ecotaxa, import_ecotaxa_labels, read_ecotaxa,
                                                validate_ecotaxa)
from sediment_cluster.particles.label import Labeller
from sediment_cluster.particles.store import ParticleStore


@pytest.fixture(scope='module')
def base(tmp_path_factory, make_clustered_store):
    "A clustered store (folder name with capitals) of 4 small synthetic plates, 2 µm per pixel."
    return make_clustered_store(tmp_path_factory.mktemp('eco'), 'My Store', n_stacks=4, random_state=3,
                                size=(256, 192), k=4, n_components=6)


@pytest.fixture
def store(base, tmp_path):
    return ParticleStore(shutil.copytree(base, tmp_path/'My Store'))


def _tsv(path): return pd.read_csv(path, sep='\t', skiprows=[1], dtype=str, keep_default_na=False)


@pytest.mark.parametrize('layer', ['sharpest', 'all'])
def test_export_passes_the_rules(store, tmp_path, layer):
    lab = Labeller(store)
    lab.name(0, 'quartz').name(1, 'foram')
    out = export_ecotaxa(store, tmp_path/'eco', layer=layer, progress=False)
    assert out['zip'].name == 'ecotaxa_my_store.zip' and out['tsv'].name == 'ecotaxa_my_store.tsv'
    assert ecotaxa_problems(out['zip']) == [] and validate_ecotaxa(out['tsv']) == out['tsv']
    df = _tsv(out['tsv'])
    assert set(df.process_pixel) == {'2.0'} and 'object_eq_diameter_um' in df
    assert all(len(c) <= 250 and c == c.lower() for c in df.columns)


def _broken(tmp_path, out, edit, name='ecotaxa_x.tsv', images=True):
    "A folder archive holding the TSV of `out` changed by `edit(df) -> df` (type row kept unless edit drops it)."
    folder = tmp_path/'broken'
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    if images:
        with zipfile.ZipFile(out['zip']) as z: z.extractall(folder)
        for p in folder.glob('*.tsv'): p.unlink()
    lines = out['tsv'].read_text().splitlines()
    df = pd.DataFrame([l.split('\t') for l in lines[1:]], columns=lines[0].split('\t'))   # row 0: types
    df = edit(df)
    (folder/name).write_text(df.to_csv(sep='\t', index=False, lineterminator='\n'))
    return ecotaxa_problems(folder)


def test_each_broken_rule_gets_one_line(store, tmp_path):
    Labeller(store).name(0, 'quartz')
    out = export_ecotaxa(store, tmp_path/'eco', progress=False)
    one = lambda edit, **kw: _broken(tmp_path, out, edit, **kw)
    assert one(lambda d: d) == []
    cases = {
        'must start with \'ecotaxa\'': dict(edit=lambda d: d, name='EcoTaxa_x.tsv'),
        'second row must give': dict(edit=lambda d: d.iloc[1:]),
        'columns must start with': dict(edit=lambda d: d.rename(columns={'object_area_px': 'area_px'})),
        'lower case letters': dict(edit=lambda d: d.rename(columns={'object_area_px': 'object_Area'})),
        'at most 250 characters': dict(edit=lambda d: d.rename(columns={'object_area_px': 'object_' + 'a' * 250})),
        'appear once': dict(edit=lambda d: d.rename(columns={'object_area_px': 'object_solidity'})),
        'mandatory columns': dict(edit=lambda d: d.drop(columns='img_file_name')),
        'object_id must not be empty': dict(edit=lambda d: d.assign(object_id=['[t]'] + [''] * (len(d) - 1))),
        'different img_rank': dict(edit=lambda d: d.assign(object_id=['[t]'] + ['a'] * (len(d) - 1))),
        '[f] columns must hold numbers': dict(edit=lambda d: d.assign(object_solidity=['[f]'] + ['x'] * (len(d) - 1))),
        'object_annotation_status must be': dict(edit=lambda d: d.assign(
            object_annotation_status=['[t]'] + ['ok'] * (len(d) - 1),
            object_annotation_category=['[t]'] + ['q'] * (len(d) - 1))),
        'needs an object_annotation_category': dict(edit=lambda d: d.assign(
            object_annotation_status=['[t]'] + ['validated'] * (len(d) - 1),
            object_annotation_category=['[t]'] + [''] * (len(d) - 1))),
        'must be a file of the archive': dict(edit=lambda d: d, images=False),
        'need process_pixel': dict(edit=lambda d: d.drop(columns='process_pixel')),
        'one value per sample_id': dict(edit=lambda d: d.assign(sample_id=['[t]'] + ['s'] * (len(d) - 1),
                                                               sample_x=['[t]'] + list(map(str, range(len(d) - 1))))),
        'fixed number of free columns': dict(edit=lambda d: d.assign(
            **{f'acq_c{i}': ['[f]'] + ['1'] * (len(d) - 1) for i in range(31)})),
    }
    for msg, kw in cases.items():
        got = one(**kw)
        assert len(got) == 1 and msg in got[0], (msg, got)
    two = one(lambda d: d.rename(columns={'object_area_px': 'Area'}).drop(columns='process_pixel'))
    assert len(two) == 3       # no prefix, capital letter, µm without process_pixel
    with pytest.raises(InputError, match='3 EcoTaxa import rule'): validate_ecotaxa(tmp_path/'broken')
    (tmp_path/'empty').mkdir()
    assert len(ecotaxa_problems(tmp_path/'empty')) == 1 and 'no TSV file' in ecotaxa_problems(tmp_path/'empty')[0]
    with pytest.raises(InputError, match='no such file'): ecotaxa_problems(tmp_path/'nowhere')


def test_round_trip_export_validate_import(store, tmp_path):
    lab = Labeller(store)
    big = lab.overview().sort_values('n').cluster.iloc[-1]
    lab.validate(big, 'quartz', drop=lab.members(big)[:1])
    lab.name(next(c for c in lab.overview().cluster if c != big), 'dark grain').grow('quartz', 2)
    lab.start_class(int(np.flatnonzero(lab.labels_per_particle()['class'].isna())[0]), 'Foram<Rhizaria')
    out = export_ecotaxa(store, tmp_path/'eco', layer='all', progress=False)
    assert validate_ecotaxa(out['zip']) == out['zip']
    back = import_ecotaxa_labels(store, out['zip'], labels='back.csv')
    assert back.labels_per_particle()['class'].tolist() == lab.labels_per_particle()['class'].tolist()
    assert back.undo().action.unique().tolist() == ['grow'] and back.labels_per_particle()['class'].isna().all()
    df = read_ecotaxa(out['tsv'])
    assert len(df) == len(store) * store.n_layers and df.columns[0] == 'img_file_name'
    df.loc[df.object_annotation_category == 'quartz', 'object_annotation_status'] = 'predicted'
    df.to_csv(tmp_path/'ecotaxa_edit.tsv', sep='\t', index=False)          # as EcoTaxa exports: no type row
    some = import_ecotaxa_labels(store, tmp_path/'ecotaxa_edit.tsv', labels='some.csv')
    assert set(some.classes) == {'Foram<Rhizaria', 'dark grain'}
    every = import_ecotaxa_labels(store, tmp_path/'ecotaxa_edit.tsv', labels='all.csv', status=None)
    assert every.labels_per_particle()['class'].tolist() == lab.labels_per_particle()['class'].tolist()
    with pytest.raises(InputError, match='prefix='):
        import_ecotaxa_labels(store, out['tsv'], labels='x.csv', prefix='other')
    df.drop(columns='object_annotation_category').to_csv(tmp_path/'ecotaxa_bare.tsv', sep='\t', index=False)
    with pytest.raises(InputError, match='no column object_annotation_category'):
        import_ecotaxa_labels(store, tmp_path/'ecotaxa_bare.tsv', labels='x.csv')
