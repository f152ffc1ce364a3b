"""Expert labelling: actions, the labels file (reopen, crash, hand-made tables, stale files), the widget,
samples and proxies, EcoTaxa export, the simulated expert."""
import os, shutil, signal, subprocess, sys, textwrap, zipfile

import cv2
import numpy as np
import pandas as pd
import pytest

from sediment_cluster.core import InputError
from sediment_cluster.particles.label import LOG_COLUMNS, Labeller, read_labels, subcluster
from sediment_cluster.particles.widget import LabelWidget
from sediment_cluster.particles.proxies import (UNLABELLED, class_counts, particle_classes, proxies, read_groups,
                                                size_stats,
                                                stack_samples, wilson, write_sample_tables)
from sediment_cluster.particles.ecotaxa import export_ecotaxa
from sediment_cluster.particles.evaluate import simulate_expert
from sediment_cluster.particles.store import ParticleStore

K = 6


@pytest.fixture(scope='module')
def base(tmp_path_factory, make_clustered_store):
    "A clustered store of 8 small synthetic plates (pixel size 2 µm), with pixel features as latents."
    return make_clustered_store(tmp_path_factory.mktemp('label'), 'store', n_stacks=8, random_state=5,
                                size=(320, 256), k=K, n_components=8)


@pytest.fixture
def store(base, tmp_path):
    "A fresh copy of the clustered store for one test."
    return ParticleStore(shutil.copytree(base, tmp_path/'store'))


def biggest(lab:Labeller) -> str:
    ov = lab.overview()
    return ov.cluster[ov.n.idxmax()]


def test_actions_and_reopen(store):
    lab = Labeller(store)
    assert not lab.path.exists()                                 # opening writes nothing
    big = biggest(lab)
    n_big = lab.overview().set_index('cluster').n[big]
    lab.name(0, 'quartz')
    parts = lab.split(big, k=2)
    assert parts == [f'{big}.0', f'{big}.1']
    sizes = lab.overview().set_index('cluster').n[parts]
    assert sizes.sum() == n_big and sizes.iloc[0] >= sizes.iloc[1]    # largest sub-cluster first
    lab.name(parts[0], 'foram')
    other = next(c for c in lab.overview().cluster if c not in ('0', *parts))
    lab.merge('0', other)
    lp = lab.labels_per_particle()
    assert list(lp.columns) == ['particle_id', 'cluster', 'label_cluster', 'class']
    assert (lp['class'] == 'quartz').sum() == lab.overview().set_index('cluster').n['0']
    assert set(lp.label_cluster[lp['class'] == 'foram']) == {parts[0]}
    again = Labeller(store.path)
    pd.testing.assert_frame_equal(again.labels_per_particle(), lp)
    assert again.undo().action.unique().tolist() == ['merge']
    assert again.undo().action.unique().tolist() == ['name']
    assert again.undo().action.unique().tolist() == ['split']
    assert again.undo().action.unique().tolist() == ['name']
    assert again.undo() is None
    assert again.labels_per_particle()['class'].isna().all()
    assert Labeller(store.path).labels_per_particle()['class'].isna().all()   # the undos were saved too


def test_log_format(store):
    lab = Labeller(store)
    big = biggest(lab)
    parts = lab.split(big, k=3)
    lab.name(parts[1], 'dark')
    log = pd.read_csv(lab.path, dtype=str, keep_default_na=False)
    assert list(log.columns) == LOG_COLUMNS
    assert log.action.tolist() == ['start', 'split', 'split', 'split', 'name']
    assert log.step.tolist() == ['0', '1', '1', '1', '2']
    ids = [np.array(p.split(), int) for p in log.particles[log.action == 'split']]
    members = np.concatenate(ids)
    assert len(members) == len(set(members)) == (store.read_table('clusters.parquet').cluster.astype(str) == big).sum()
    assert log.value[log.action == 'split'].tolist() == parts


def test_hand_made_table(store):
    pd.DataFrame({'cluster': [0, 1], 'class': ['quartz', 'foram']}).to_csv(store.path/'labels.csv', index=False)
    lab = Labeller(store)
    assert lab.overview().set_index('cluster')['class'][['0', '1']].tolist() == ['quartz', 'foram']
    lab.name(2, 'dark')                                          # saved as a log from now on
    assert read_labels(lab.path).action.tolist() == ['start', 'name', 'name', 'name']
    pd.DataFrame({'cluster': [0, 17], 'class': ['quartz', 'x']}).to_csv(store.path/'bad.csv', index=False)
    with pytest.raises(InputError, match=r'bad.csv step 2: cluster 17 does not exist \(clusters are 0–5'):
        Labeller(store, labels='bad.csv')


def test_labels_of_another_clustering_refused(store):
    Labeller(store).name(0, 'quartz')
    cl = store.read_table('clusters.parquet')
    cl['cluster'] = (cl.cluster + 1) % K
    store.write_table('clusters.parquet', cl)
    with pytest.raises(InputError, match='made for another clustering'): Labeller(store)


def test_bad_input(store, tmp_path):
    lab = Labeller(store)
    big = biggest(lab)
    with pytest.raises(InputError, match='cluster 99 does not exist'): lab.name(99, 'x')
    with pytest.raises(InputError, match='class name'): lab.name(0, 'a\tb')
    with pytest.raises(InputError, match='class name'): lab.name(0, None)
    parts = lab.split(big, k=2)
    with pytest.raises(InputError, match=f'cluster {big} was split into {parts[0]}, {parts[1]}'): lab.name(big, 'x')
    lab.merge(parts[0], parts[1])
    with pytest.raises(InputError, match=f'was merged into {parts[0]}'): lab.split(parts[1])
    with pytest.raises(InputError, match='cannot be merged into itself'): lab.merge(0, 0)
    with pytest.raises(InputError, match='plain file name'): Labeller(store, labels='../labels.csv')
    (store.path/'junk.csv').write_bytes(b'\x00\xff garbage\n"unclosed')
    with pytest.raises(InputError, match='junk.csv'): Labeller(store, labels='junk.csv')
    with pytest.raises(InputError, match='features have 3 rows'):
        Labeller(store, labels='f.csv', features=np.zeros((3, 2))).split(0)
    (store.path/'latent.npy').unlink()
    with pytest.raises(InputError, match='no latent.npy'): Labeller(store, labels='g.csv').split(big)
    singles = [c for c, n in lab.overview()[['cluster', 'n']].values if n == 1]
    one = singles[0] if singles else None
    if one is not None:
        with pytest.raises(InputError, match='cannot split 1 particle'):
            Labeller(store, labels='h.csv', features=np.random.rand(len(store), 2)).split(one)


def test_store_problems(store, tmp_path):
    empty = ParticleStore.create(tmp_path/'empty', store.table.iloc[:0], store.crops[:0])
    with pytest.raises(InputError, match='no particles'): Labeller(empty)
    (store.path/'clusters.parquet').unlink()
    with pytest.raises(InputError, match='no clusters yet; run `sediment-cluster cluster'): Labeller(store)
    store.write_table('clusters.parquet', pd.DataFrame({'particle_id': [0, 1], 'cluster': [0, 1]}))
    with pytest.raises(InputError, match='does not list the store'): Labeller(store)


def test_second_session_refused(store):
    a, b = Labeller(store), Labeller(store)
    a.name(0, 'quartz')
    with pytest.raises(InputError, match='changed on disk'): b.name(1, 'dark')
    assert Labeller(store).overview().set_index('cluster')['class']['0'] == 'quartz'


def test_kill_during_actions_loses_nothing(store):
    "A labelling process killed with SIGKILL mid-way leaves a labels file that reads back with every confirmed action."
    code = textwrap.dedent(f"""
        from sediment_cluster.particles.label import Labeller
        lab = Labeller({str(store.path)!r})
        for i in range(10_000):
            lab.name(i % {K}, f'class{{i}}')
            print(i + 1, flush=True)
    """)
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    done = 0
    for line in p.stdout:
        done = int(line)
        if done >= 40: break
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    log = Labeller(store).log
    assert log.step.tolist() == list(range(len(log)))
    assert log.step.max() >= done
    last = log.iloc[-1]
    assert last.value == f'class{log.step.max() - 1}'


def test_widget(store):
    w = LabelWidget(Labeller(store), n_show=4)
    first = w.pick.value
    assert first == '0' and w.image.value[:4] == b'\x89PNG'
    w.name_box.value = 'quartz'
    w.name_button.click()
    assert w.lab.overview().set_index('cluster')['class']['0'] == 'quartz'
    assert w.pick.value == '1' and 'named 0' in w.status.value
    w.k_box.value = 2
    w.split_button.click()
    assert w.pick.value == '1.0'
    w.merge_box.value = '1.1'
    w.merge_button.click()
    assert '1.1' not in set(w.lab.overview().cluster)
    w.merge_box.value = 'nope'
    w.merge_button.click()
    assert 'cluster nope does not exist' in w.status.value         # shown, not raised
    w.undo_button.click()
    w.undo_button.click()
    w.undo_button.click()
    assert w.lab.overview()['class'].isna().all()
    w.undo_button.click()
    assert w.status.value == 'nothing to undo'
    for c in w.lab.overview().cluster: w.lab.name(c, 'x')
    w.next_button.click()
    assert w.status.value == 'every cluster is named'
    assert Labeller(store).labels_per_particle().equals(w.lab.labels_per_particle())


def test_stack_samples(tmp_path):
    ids = ['a_1', 'a_2', 'b_1']
    (tmp_path/'m.csv').write_text('stack_id,sample\na_1,A\na_2,A\nb_1,B\n')
    assert stack_samples(ids, tmp_path/'m.csv').tolist() == ['A', 'A', 'B']
    assert stack_samples(ids, str(tmp_path/'m.csv')).tolist() == ['A', 'A', 'B']
    assert stack_samples(ids, r'(?P<sample>\w)_\d').tolist() == ['a', 'a', 'b']
    with pytest.raises(InputError, match='no sample for stack'): stack_samples(ids, r'(?P<sample>a)_\d')
    with pytest.raises(InputError, match='no such sample mapping file'): stack_samples(ids, tmp_path/'none.csv')
    (tmp_path/'w.csv').write_text('stack,s\na_1,A\n')
    with pytest.raises(InputError, match='needs the columns stack_id and sample'): stack_samples(ids, tmp_path/'w.csv')


def pc_table():
    "A hand-made per-particle table with known counts."
    rows = [('A', 'Foram', False)] * 6 + [('A', 'fragment', False)] * 2 + [('A', 'quartz', False)] * 3
    rows += [('A', 'dark', False), ('A', 'other', False), ('A', 'foram', True), ('A', UNLABELLED, False)]
    rows += [('B', 'quartz', False)] * 2
    df = pd.DataFrame(rows, columns=['sample', 'class', 'flagged'])
    return df.assign(particle_id=range(len(df)), stack_id='s', eq_diameter_um=np.linspace(50, 300, len(df)))


def test_proxies_known_numbers(tmp_path):
    p = proxies(pc_table())
    a, b = p.loc['A'], p.loc['B']
    assert (a.n_biogenic, a.n_terrigenous, a.n_whole, a.n_fragment, a.n_unlabelled) == (8, 4, 6, 2, 1)
    assert a.biogenic_terrigenous == 2 and a.biogenic_fraction == pytest.approx(8 / 12)
    assert a.fragmentation_index == pytest.approx(.25)
    assert a.biogenic_fraction_lo < 8 / 12 < a.biogenic_fraction_hi
    assert b.n_biogenic == 0 and b.biogenic_terrigenous == 0 and np.isnan(b.fragmentation_index)
    assert proxies(pc_table(), fragments_per_test=8).loc['A'].fragmentation_index == pytest.approx(.25 / 6.25)
    assert proxies(pc_table(), exclude_flagged=False).loc['A'].n_whole == 7
    (tmp_path/'g.csv').write_text('class,group\nforam,biogenic\nforam,whole\nother,biogenic\nquartz,terrigenous\n')
    g = proxies(pc_table(), groups=tmp_path/'g.csv').loc['A']
    assert (g.n_biogenic, g.n_terrigenous, g.n_fragment) == (7, 3, 0)
    assert read_groups({'Foram ': 'biogenic'}) == {'foram': {'biogenic'}}
    with pytest.raises(InputError, match='no such class→group mapping file'): read_groups(tmp_path/'none.csv')


def test_counts_and_sizes():
    pc = pc_table()
    cc = class_counts(pc)
    assert cc.loc['A', 'total'] == 14 and cc.loc['A', 'excluded'] == 1 and cc.loc['B', 'quartz'] == 2
    ss = size_stats(pc)
    assert ss.loc[('A', 'quartz'), 'n'] == 3 and list(ss.columns) == ['n', 'mean_um', 'sd_um',
                                                                      'd10_um', 'd50_um', 'd90_um']
    assert 'mean_px' in size_stats(pc.rename(columns={'eq_diameter_um': 'eq_diameter_px'}))


def test_wilson_contains_estimate():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 500, 200)
    k = rng.integers(0, n + 1)
    lo, hi = wilson(k, n)
    assert ((lo <= k / n + 1e-12) & (k / n <= hi + 1e-12) & (lo >= -1e-12) & (hi <= 1 + 1e-12)).all()


def test_particle_classes_and_ecotaxa(store, tmp_path):
    lab = Labeller(store)
    for c in range(K): lab.name(c, ['quartz', 'foram', 'dark'][c % 3])
    lab.undo()                                                  # leave the last cluster unnamed
    pc = particle_classes(store, samples={s: s[:4] for s in store.table.stack_id.unique()})
    assert (pc['class'] == UNLABELLED).sum() == (store.read_table('clusters.parquet').cluster == K - 1).sum()
    assert 'eq_diameter_um' in pc
    out = export_ecotaxa(store, tmp_path/'eco', layer='all', fmt='jpg', progress=False)
    lines = out['tsv'].read_text().splitlines()
    head, types = lines[0].split('\t'), lines[1].split('\t')
    assert head[:3] == ['img_file_name', 'img_rank', 'object_id'] and 'object_annotation_category' in head
    assert all(t in ('[t]', '[f]') for t in types) and dict(zip(head, types))['object_chopped'] == '[f]'
    df = pd.read_csv(out['tsv'], sep='\t', skiprows=[1], keep_default_na=False)
    assert len(df) == len(store) * store.n_layers and sorted(df.img_rank.unique()) == list(range(1, store.n_layers + 1))
    cat = df.groupby('object_id').object_annotation_category.first().to_numpy()
    assert (np.where(cat == '', UNLABELLED, cat) == pc['class'].to_numpy()).all()
    assert set(df.object_annotation_status[df.object_annotation_category != '']) == {'validated'}
    with zipfile.ZipFile(out['zip']) as z:
        names = z.namelist()
        assert out['tsv'].name in names and len(names) == len(df) + 1
        im = cv2.imdecode(np.frombuffer(z.read(df.img_file_name[0]), np.uint8), cv2.IMREAD_COLOR)
        assert im.shape == (store.size, store.size, 3)
    assert sorted(p.name for p in (tmp_path/'eco').iterdir()) == sorted([out['zip'].name, out['tsv'].name])
    with pytest.raises(InputError, match="layer=9"): export_ecotaxa(store, tmp_path/'e2', layer=9, progress=False)
    with pytest.raises(InputError, match="status='maybe'"):
        export_ecotaxa(store, tmp_path/'e2', status='maybe', progress=False)
    empty = ParticleStore.create(tmp_path/'empty', store.table.iloc[:0], store.crops[:0])
    with pytest.raises(InputError, match='nothing to export'): export_ecotaxa(empty, tmp_path/'e3', progress=False)


def test_subcluster():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, .1, (30, 2)), rng.normal(5, .1, (10, 2)), rng.normal(-5, .1, (20, 2))])
    sub = subcluster(X, 3)
    assert np.bincount(sub).tolist() == [30, 20, 10]
    assert subcluster(X[:2], 5).tolist() in ([0, 1], [1, 0])
    with pytest.raises(InputError, match='identical features'): subcluster(np.ones((5, 3)), 2)


def test_simulated_expert():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 10, (4, 5))
    y = rng.integers(0, 4, 400)
    X = centres[y] + rng.normal(0, .5, (400, 5))
    truth = np.array(list('abcd'), object)[y]
    pure = simulate_expert(y, truth, X)                         # clusters that are the classes: one action each
    assert (pure['actions'], pure['objects_per_action'], pure['precision']) == (4, 100, 1)
    truth2 = truth.copy()
    truth2[:20] = 'unmatched'
    r = simulate_expert(np.zeros(400, int), truth2, X, min_purity=.95)   # one mixed cluster: must split
    assert r['objects'] == 380 and r['split_actions'] >= 1 and r['precision'] >= .95
    assert all(v is None for v in r['labels'][:20])
    noisy = simulate_expert(rng.integers(0, 8, 400), truth, rng.normal(size=(400, 5)), min_purity=.9)
    assert noisy['precision'] >= .9 and noisy['actions'] > 8
    with pytest.raises(InputError, match='one row per particle'): simulate_expert(y, truth[:3], X)


def test_write_sample_tables(store, tmp_path):
    lab = Labeller(store)
    for c in range(K): lab.name(c, ['quartz', 'foram', 'fragment'][c % 3])
    m = tmp_path/'samples.csv'
    stacks = pd.DataFrame({'stack_id': store.table.stack_id.unique()})
    stacks.assign(sample=lambda d: np.where(d.index < 4, 'top', 'base')).to_csv(m, index=False)
    paths = write_sample_tables(store, tmp_path/'out', samples=m)
    assert sorted(paths) == ['class_counts', 'proxies', 'sizes']
    pr = pd.read_csv(paths['proxies'], index_col='sample')
    assert sorted(pr.index) == ['base', 'top'] and ((pr.fragmentation_index >= 0) & (pr.fragmentation_index <= 1)).all()
    cc = pd.read_csv(paths['class_counts'], index_col='sample')
    assert (cc.total + cc.excluded).sum() == len(store)


def test_tampered_split_rows_refused(store):
    lab = Labeller(store)
    big = biggest(lab)
    lab.split(big, k=2)
    log = pd.read_csv(lab.path, dtype=str, keep_default_na=False)
    for bad in ('1 x 2', '', '0 0'):
        t = log.copy()
        t.loc[t.action == 'split', 'particles'] = [bad, t.particles[t.action == 'split'].iloc[1]]
        t.to_csv(store.path/'t.csv', index=False)
        with pytest.raises(InputError, match=f'split of cluster {big}'): Labeller(store, labels='t.csv')
    with pytest.raises(InputError, match='k=1'): lab.split(f'{big}.0', k=1)


def _state(lab): return lab.labels_per_particle(), lab.overview()


def test_loop_actions_each_undo(store):
    "validate, grow, start, recluster, merge_classes: each one step of the log, each undone exactly."
    lab = Labeller(store)
    big = biggest(lab)
    ids = lab.members(big)
    steps = [lambda: lab.validate(big, 'quartz', drop=ids[-2:]), lambda: lab.grow('quartz', 3),
             lambda: lab.start_class(int(np.flatnonzero(lab.labels_per_particle()['class'].isna())[0]), 'foram'),
             lambda: lab.recluster(2, far=True), lambda: lab.merge_classes('quartz', 'foram')]
    before = []
    for act in steps:
        before.append(_state(lab))
        act()
    lp = lab.labels_per_particle()
    assert set(lp['class'].dropna()) == {'quartz'} and lp['class'].notna().sum() == len(ids) - 2 + 3 + 1
    assert (lp.label_cluster.str.startswith('r') == lp['class'].isna()).all()   # the remainder was re-clustered
    assert read_labels(lab.path).action.drop_duplicates().tolist()[1:] == ['validate', 'grow', 'seed', 'recluster',
                                                                          'merge_classes']
    for want in reversed(before):
        lab.undo()
        pd.testing.assert_frame_equal(lab.labels_per_particle(), want[0])
        pd.testing.assert_frame_equal(lab.overview(), want[1])
    assert not (store.path/'labels.csv').exists() or read_labels(lab.path).step.max() == 0


def test_validate_drops_outliers_and_grow_ranks(store):
    lab = Labeller(store)
    c = biggest(lab)
    ids = lab.members(c)
    lab.validate(c, 'quartz', drop=[ids[0]])
    lp = lab.labels_per_particle()
    assert lp['class'][ids[0]] is None and (lp['class'][ids[1:]] == 'quartz').all()
    assert lab.overview().set_index('cluster').loc[c, ['class', 'open']].tolist() == ['quartz', 1]
    X, centre = lab.features, lab.features[ids[1:]].mean(0)
    rec = lab.recommend('quartz')
    d = np.linalg.norm(X[rec.particle_id] - centre, axis=1)
    assert np.allclose(d, rec.distance, rtol=1e-4) and (np.diff(d) >= -1e-6).all()
    assert len(rec) == lp['class'].isna().sum()
    lab.grow('quartz', 4, drop=rec.particle_id[:1])
    got = set(np.flatnonzero(lab.labels_per_particle()['class'] == 'quartz'))
    assert got == set(ids[1:]) | set(rec.particle_id[1:4])
    with pytest.raises(InputError, match='only particles of cluster'): lab.validate(c, 'x', drop=[10**6])
    with pytest.raises(InputError, match="class 'nope' does not exist"): lab.grow('nope', 2)
    with pytest.raises(InputError, match='upto=0'): lab.grow('quartz', 0)
    with pytest.raises(InputError, match='give distinct particle ids'): lab.start_class(10**6, 'x')


def test_session_persists_and_writes_table(store):
    lab = Labeller(store)
    lab.validate(biggest(lab), 'quartz')
    new = lab.recluster(2)
    lab.validate(new[0], 'dark')
    table = pd.read_csv(store.path/'labels_classes.csv', dtype={'label_cluster': str})
    assert table['class'].fillna('').tolist() == lab.labels_per_particle()['class'].fillna('').tolist()
    again = Labeller(store.path)                       # a new session carries on where the last stopped
    pd.testing.assert_frame_equal(again.labels_per_particle(), lab.labels_per_particle())
    again.grow('dark', 1)
    again.undo()
    again.undo()                                       # the validate of the new cluster
    assert again.overview().set_index('cluster').loc[new[0], 'class'] is None
    assert pd.read_csv(store.path/'labels_classes.csv')['class'].eq('dark').sum() == 0
    gone = next(str(c) for c in range(K) if str(c) not in again.overview().cluster.tolist())
    with pytest.raises(InputError, match=f'cluster {gone} was re-clustered into r2.0'): again.name(gone, 'q')


def test_recluster_far_and_log_checks(store):
    lab = Labeller(store)
    lab.validate(biggest(lab), 'quartz')
    open0 = lab.labels_per_particle()['class'].isna().sum()
    new = lab.recluster(3, far=True)
    ov = lab.overview().set_index('cluster')
    assert ov.loc[new].n.sum() == open0 and len(new) <= 3 and ov.loc[new].n.is_monotonic_decreasing
    log = read_labels(lab.path)
    bad = log.copy()
    bad.loc[bad.action == 'recluster', 'particles'] = bad.loc[bad.action == 'recluster', 'particles'].iloc[0]
    bad.to_csv(store.path/'bad.csv', index=False)
    with pytest.raises(InputError, match='bad.csv step 2: re-clustering must move'): Labeller(store, labels='bad.csv')
    with pytest.raises(InputError, match='k=0'): lab.recluster(0)


def test_widget_loop_buttons(store):
    "validate with outliers, recommend/more/grow, start class, re-cluster, merge classes, undo: through the buttons."
    w = LabelWidget(Labeller(store), n_show=4)
    c = biggest(w.lab)
    w.pick.value = c
    shown = w.lab.members(c)[:4]
    w.name_box.value, w.drop_box.value = 'quartz', '2'
    w.validate_button.click()
    lp = w.lab.labels_per_particle()
    assert lp['class'][shown[1]] is None and lp['class'][shown[0]] == 'quartz', w.status.value
    assert w.info.value.startswith('<b>recommended for quartz</b>: ranks 1–4')   # validate shows the recommendations
    w.name_box.value = 'quartz'
    w.recommend_button.click()
    w.more_button.click()
    assert w.page == 1 and 'ranks 5–' in w.info.value
    w.upto_box.value = 3
    w.grow_button.click()
    rec_before = set(np.flatnonzero(w.lab.labels_per_particle()['class'] == 'quartz'))
    assert len(rec_before) == (lp['class'] == 'quartz').sum() + 3 and w.name_box.value == 'quartz'
    w.name_box.value, w.particle_box.value = 'dark', int(shown[1])
    w.start_button.click()
    assert w.lab.labels_per_particle()['class'][shown[1]] == 'dark'
    w.rk_box.value, w.far_box.value = 2, False
    w.recluster_button.click()
    assert w.pick.value.startswith('r') and 're-clustered' in w.status.value
    w.name_box.value, w.classes_box.value = 'quartz', 'dark'
    w.merge_classes_button.click()
    assert w.lab.classes == ['quartz']
    assert [w.lab.undo().action.iloc[0] for _ in range(5)] == ['merge_classes', 'recluster', 'seed', 'grow', 'validate']
    w.refresh(c)
    w.name_box.value, w.cut_box.value = 'dark', 2                   # validate the gallery up to rank 2
    w.validate_button.click()
    assert (w.lab.labels_per_particle()['class'] == 'dark').sum() == 2 and 'up to rank 2' in w.status.value
    w.upto_box.value = 4                                              # the whole page: the next page is shown
    w.grow_button.click()
    assert w.status.value.endswith('the next ones are shown') and 'ranks 1–4' in w.info.value
    w.upto_box.value = 1                                              # cut short: on to the next cluster
    w.grow_button.click()
    assert w.status.value.endswith('next cluster') and (w.lab.labels_per_particle()['class'] == 'dark').sum() == 7
    w.refresh()
    w.drop_box.value = 'x'
    w.validate_button.click()
    assert 'give gallery positions' in w.status.value                     # shown, not raised


def test_simulate_loop():
    "Blobs a, b, c: the mixed cluster b+c is skipped, a validated and grown page by page, the rest re-clustered."
    from sediment_cluster.particles.evaluate import LOOP_ACTIONS, simulate_loop
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(m, .2, (60, 2)) for m in (0, 6, 12)])
    truth = np.repeat(['a', 'b', 'c'], 60).astype(object)
    start = np.repeat([0, 1, 1], 60)                       # cluster 1 holds b and c
    start[:5] = 2                                          # a small cluster of a
    r = simulate_loop(start, truth, X, page=20, far=True)
    assert r['precision'] == 1.0 and r['labelled'] == r['objects'] == 180 and r['coverage'] == 1.0
    # skip b+c; validate 20 of a, grow 2 pages, stop; re-cluster; b: validate, 2 pages, stop; c: validate, 2 pages
    got = {k: r[f'{k}_actions'] for k in LOOP_ACTIONS}
    assert got == dict(validate=3, drop=0, grow=6, stop=2, skip=1, recluster=1) and r['actions'] == 13
    done = simulate_loop(start, truth, X, page=20, finish=True)       # nothing left to name by hand
    assert (done['all_actions'], done['all_objects_per_action'], done['all_precision']) == (13, 180 / 13, 1.0)
    assert r['objects_per_action'] == 180 / 13 and r['half_actions'] == 8
    c = r['curve']
    assert c.actions.tolist() == list(range(r['actions'] + 1)) and c.labelled.is_monotonic_increasing
    truth2 = truth.copy()
    truth2[:3] = 'unmatched'
    r2 = simulate_loop(start, truth2, X, page=20)
    assert r2['objects'] == 177 and list(r2['labels'][:3]) == [None] * 3
    with pytest.raises(InputError, match='one row per particle'): simulate_loop(start[:5], truth, X)


def test_simulate_loop_cut_and_drop():
    "The cut row: validate the pure head of a cluster, click away a wrong one above the cut, skip a mixed gallery."
    from sediment_cluster.particles.evaluate import simulate_loop
    same = np.zeros((90, 2))                                # one point: the gallery keeps the particles' order
    t = np.array(['a'] * 40 + ['b'] + ['a'] * 45 + ['b'] * 4, object)
    r = simulate_loop(np.zeros(90, int), t, same, rounds=1)
    assert (r['validate_actions'], r['labelled'], r['precision']) == (1, 86, 85 / 86)   # the cut at the last a
    assert r['grow_actions'] + r['stop_actions'] == 0                # cut short: the class ends inside the cluster
    r = simulate_loop(np.zeros(90, int), t, same, rounds=1, max_drop=1)
    assert (r['drop_actions'], r['labelled'], r['precision'], r['actions']) == (1, 85, 1.0, 2)
    mixed = np.array(['a', 'b'] * 45, object)
    r = simulate_loop(np.zeros(90, int), mixed, same, rounds=1)
    assert (r['skip_actions'], r['labelled'], r['actions']) == (1, 0, 1) and np.isnan(r['precision'])
    X = np.c_[np.arange(90) % 2, np.zeros(90)]                        # the loop skips, name / split labels all
    r = simulate_loop(np.zeros(90, int), mixed, X, rounds=1, finish=True)
    assert r['labelled'] == 0 and r['all_precision'] == 1.0 and r['all_actions'] == 1 + 1 + 1 + 2


@pytest.mark.parametrize('seed', range(4))
def test_simulate_loop_precision_holds(seed):
    "Every validated or accepted range is at least min_purity right, so all labels together are too."
    from sediment_cluster.particles.evaluate import simulate_loop
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, 3))
    truth = np.where(X[:, 0] + rng.normal(0, .7, 400) > 0, 'a', 'b').astype(object)
    for mp in (.8, .95):
        r = simulate_loop(rng.integers(0, 12, 400), truth, X, min_purity=mp, page=30, patience=0, random_state=seed)
        assert r['labelled'] == 0 or r['precision'] >= mp
        assert r['labelled'] == sum(lab is not None for lab in r['labels'])


def test_compare_feature_sets(store):
    from sediment_cluster.particles.evaluate import compare_feature_sets
    truth = np.where(store.table.eq_diameter_px.to_numpy() > np.median(store.table.eq_diameter_px), 'big', 'small')
    size = np.log(store.table[['eq_diameter_px']].to_numpy())
    t = compare_feature_sets(store, truth, names=(), features={'size': size, 'noise': np.random.rand(len(store), 3)},
                             ks=(3, 6), page=20)
    assert t[['features', 'k']].values.tolist() == [['colour + shape', 3], ['colour + shape', 6], ['size', 3],
                                                   ['size', 6], ['noise', 3], ['noise', 6]]
    s = t.set_index(['features', 'k'])
    assert s.loc[('size', 6), 'purity'] > s.loc[('noise', 6), 'purity']
    assert s.loc[('size', 6), 'objects_per_action'] > s.loc[('noise', 6), 'objects_per_action']
    assert ((t.precision >= .95) | t.precision.isna()).all() and (t.seconds > 0).all()
    assert set(t.attrs['curves']) == set(zip(t.features, t.k))
    from sediment_cluster.particles.features import write_feature_set
    write_feature_set(store, 'size', size, made_by='test', seconds=1.5)         # stored sets are found by name
    t = compare_feature_sets(store, truth, colour_shape=False, ks=(6,), page=20)
    assert t.features.tolist() == ['size', 'vae'] and t.feature_seconds.tolist()[0] == 1.5   # vae: latent.npy
    assert t.set_index('features').loc['size', 'purity'] == s.loc[('size', 6), 'purity']
    with pytest.raises(InputError, match="no feature set 'nope'"): compare_feature_sets(store, truth, names=['nope'])
    with pytest.raises(InputError, match='give one each'): compare_feature_sets(store, truth[:3])
    with pytest.raises(InputError, match='no feature sets'): compare_feature_sets(store, truth, names=(),
                                                                                  colour_shape=False)


def test_validate_upto_and_recluster_default_k(store):
    lab = Labeller(store)
    c = biggest(lab)
    ids = lab.members(c)
    lab.validate(c, 'quartz', upto=3, drop=ids[1:2])
    cls = lab.labels_per_particle()['class']
    assert cls[ids[[0, 2]]].tolist() == ['quartz'] * 2 and cls.notna().sum() == 2
    with pytest.raises(InputError, match='upto=1.5'): lab.validate(c, 'x', upto=1.5)
    n_open = cls.isna().sum()
    new = lab.recluster()                                   # K from the remainder: the first clustering's mean size
    assert len(new) == max(2, round(n_open * K / len(store)))
    X = lab.features
    for r in new:                                           # a new cluster's gallery: nearest its own centre first
        m = lab.members(r)
        d = ((X[m] - X[m].mean(0)) ** 2).sum(1)
        assert (np.diff(d) >= -1e-6).all()
