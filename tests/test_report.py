"""The HTML report: sections present or left out by artefact, self-contained page, the UMAP cache, bad input,
a look in headless Chromium."""
import re, shutil, subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from sediment_cluster.particles import report as rp
from sediment_cluster.core import InputError
from sediment_cluster.particles.label import Labeller
from sediment_cluster.particles.overcluster import cluster_store, pixel_features
from sediment_cluster.particles.report import embed_2d, thumbs, write_report
from sediment_cluster.particles.store import ParticleStore, extract_store
from sediment_cluster.particles.synth import synth_plates

SECTIONS = ('overview', 'clusters', 'map', 'labels', 'samples')


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    "A store of 6 small synthetic plates: extracted only (no latent, no clusters)."
    root = tmp_path_factory.mktemp('report')
    plates = synth_plates(root/'plates', n_stacks=6, random_state=2, size=(320, 256), progress=False)
    return extract_store(plates, root/'store', size=32, workers=1, progress=False).path


@pytest.fixture
def store(base, tmp_path):
    return ParticleStore(shutil.copytree(base, tmp_path/'store'))


class Page(HTMLParser):
    "Section ids, every src/href, and the tags of a page."
    def __init__(self, text):
        super().__init__()
        self.ids, self.refs, self.tags = [], [], set()
        self.feed(text)
    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        a = dict(attrs)
        if tag == 'section' and 'id' in a: self.ids.append(a['id'])
        self.refs += [v for k, v in attrs if k in ('src', 'href')]


def sections(path) -> list: return [i for i in Page(Path(path).read_text()).ids if i in SECTIONS]


def label_all(store):
    "Latent, clusters and a labels file in which every cluster but the last is named."
    store.write_array('latent.npy', pixel_features(store, n_components=6))
    cluster_store(store, k=5, random_state=0, progress=False)
    lab = Labeller(store)
    for c in range(4): lab.name(c, ['quartz', 'foram'][c % 2])
    return lab


def test_sections_follow_artefacts(store, tmp_path):
    bare = write_report(store, tmp_path/'a.html')
    assert sections(bare) == ['overview']
    missing = re.findall(r'<li>(.*?)</li>', bare.read_text())
    assert [m.split(':')[0] for m in missing] == ['Clusters', 'Latent map', 'Labels', 'Samples and proxies']
    store.write_array('latent.npy', pixel_features(store, n_components=6))
    assert sections(write_report(store, tmp_path/'b.html', view='pca')) == ['overview', 'map']
    cluster_store(store, k=5, random_state=0, progress=False)
    assert sections(write_report(store, tmp_path/'c.html', view='pca')) == ['overview', 'clusters', 'map']
    assert sections(write_report(store, tmp_path/'d.html', view=None)) == ['overview', 'clusters']
    Labeller(store).name(0, 'quartz')
    full = write_report(store, tmp_path/'e.html', view='pca', samples=r'(?P<sample>s000)\d')
    assert sections(full) == list(SECTIONS)
    assert 'Not in this report' not in full.read_text()


def test_page_is_self_contained(store, tmp_path):
    label_all(store)
    page = write_report(store, tmp_path/'r.html', view='pca').read_text()
    p = Page(page)
    assert p.refs and all(r.startswith(('data:image/png;base64,', 'data:image/jpeg;base64,', '#')) for r in p.refs)
    assert not {'script', 'link', 'iframe'} & p.tags and not re.search(r'https?://', page)
    anchors = {r[1:] for r in p.refs if r.startswith('#')}
    assert anchors <= set(re.findall(r'id="([^"]+)"', page))       # every link lands
    assert page.count('<details') == 5 and 'quartz' in page and 'fragmentation_index' in page
    assert sorted(q.name for q in tmp_path.iterdir()) == ['r.html', 'store']   # no temporary file left


def test_galleries_and_thumbs(store):
    assert thumbs(store, [0, 2, 1], thumb=20).shape == (3, 20, 20, 3)
    assert thumbs(store, [0], layer=0, thumb=32).shape == (1, 32, 32, 3)
    assert rp.gallery(store, []) == ''
    assert rp.gallery(store, [0, 1]).startswith('<img class="gal" alt="crops" src="data:image/jpeg;base64,')


def test_umap_is_cached(store, monkeypatch):
    X = np.random.default_rng(0).normal(size=(len(store), 4)).astype(np.float32)
    store.write_array('latent.npy', X)
    calls = []
    monkeypatch.setattr(rp, 'umap_embedding', lambda X, *a, **k: calls.append(1) or np.ones((len(X), 2), np.float32))
    E = embed_2d(store, X, 'umap')
    assert calls == [1] and (store.path/'umap.npy').is_file() and E.shape == (len(store), 2)
    assert (embed_2d(store, X, 'umap') == E).all() and calls == [1]          # from the cache
    store.write_array('latent.npy', X)                                       # a newer latent: recomputed
    embed_2d(store, X, 'umap')
    assert calls == [1, 1]
    with pytest.raises(InputError, match="view='tsne'"): embed_2d(store, X, 'tsne')


def test_bad_and_empty_stores(store, tmp_path):
    store.write_array('latent.npy', np.zeros((3, 2), np.float32))
    with pytest.raises(InputError, match='3 rows for'): write_report(store, tmp_path/'x.html')
    empty = ParticleStore.create(tmp_path/'empty', store.table.iloc[:0], store.crops[:0])
    page = write_report(empty, tmp_path/'empty.html').read_text()
    assert sections(tmp_path/'empty.html') == ['overview'] and '<td>0</td>' in page
    with pytest.raises(InputError, match='no such particle store'): write_report(tmp_path/'nothing', tmp_path/'n.html')


@pytest.mark.skipif(not (shutil.which('chromium') or shutil.which('chromium-browser')),
                    reason='headless Chromium not installed')
def test_chromium_renders_it(store, tmp_path):
    import cv2
    label_all(store)
    rep = write_report(store, tmp_path/'r.html', view='pca')
    shot = tmp_path/'r.png'
    subprocess.run([shutil.which('chromium') or shutil.which('chromium-browser'), '--headless', '--no-sandbox',
                    '--disable-gpu',
                    f'--screenshot={shot}', '--window-size=1000,1600', rep.resolve().as_uri()],
                   capture_output=True, timeout=120)
    im = cv2.imread(str(shot))
    assert im.shape == (1600, 1000, 3)
    green = ((im[..., 1] > 120) & (im[..., 2] < 100) & (im[..., 0] < 100)).mean()   # the plate in the crops
    assert im.std() > 30 and green > .005


def test_labels_section_counts_particles_of_the_loop(store, tmp_path):
    "Classes made by validate (outliers left out), grow and start_class are counted particle by particle."
    store.write_array('latent.npy', pixel_features(store, n_components=6))
    cluster_store(store, k=5, random_state=0, progress=False)
    lab = Labeller(store)
    big = lab.overview().sort_values('n').cluster.iloc[-1]
    lab.validate(big, 'quartz', drop=lab.members(big)[:1]).grow('quartz', 2)
    n_q = int((lab.labels_per_particle()['class'] == 'quartz').sum())
    assert n_q == len(lab.members(big)) - 1 + 2
    lab.start_class(int(np.flatnonzero(lab.labels_per_particle()['class'].isna())[0]), 'foram')
    d = rp.load_report_data(store, samples=r'(?P<sample>s000)\d')
    html = rp.labels_section(d)
    assert re.search(rf'<td>quartz</td>\s*<td>[^<]*</td>\s*<td>{n_q}</td>', html), html[:600]
    assert f'2 classes covering {n_q + 1} of {len(store)} particles' in html
    pc = d.pc.assign(flagged=False)                        # the per-sample table counts every labelled particle
    assert rp.class_counts(pc)[['quartz', 'foram']].sum().tolist() == [n_q, 1]


def test_stale_clusters_are_flagged_on_the_page(store, tmp_path):
    store.write_array('latent.npy', pixel_features(store, n_components=6))
    cluster_store(store, k=5, random_state=0, progress=False)
    assert 'out of date' not in write_report(store, tmp_path/'fresh.html', view=None).read_text()
    store.write_array('latent.npy', pixel_features(store, n_components=4))      # features changed after clustering
    with pytest.warns(UserWarning, match=r'clusters out of date: computed from an earlier latent.npy; rebuild it with '
                                         r'`sediment-cluster cluster \S+ --k 5'):
        page = write_report(store, tmp_path/'stale.html', view=None).read_text()
    assert 'WARNING: clusters out of date' in page
