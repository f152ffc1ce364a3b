"""The offline docs build `tools/build_docs.py`: a page per notebook, a sidebar linking all of them (the design page
after the index), API docs from `show_doc`, links and images that resolve, no network resources, a search index of
every page, executed notebooks reused, failures that name the notebook."""
import json, os, re, shutil, subprocess, sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT/'tools'/'build_docs.py'
# a 2×2 red PNG: a stored plot for a notebook that is not executed
PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=='

def notebooks(nbs:Path) -> list:
    "Notebooks the site must show: all under `nbs`, except names starting with `_` or `.`."
    return sorted(p.relative_to(nbs).as_posix() for p in nbs.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(nbs).parts))

def page_of(nb:str) -> str:
    "`00_core.ipynb` -> `core.html`, `tutorials/01_x.ipynb` -> `tutorials/x.html` (Quarto's names)."
    p = Path(nb)
    return (p.parent/(re.sub(r'^\d+[a-zA-Z0-9]*_', '', p.stem) + '.html')).as_posix()

def write_nb(path:Path, *cells):
    path.parent.mkdir(parents=True, exist_ok=True)
    ks = {'display_name': 'python3', 'language': 'python', 'name': 'python3'}
    nb = new_notebook(cells=list(cells), metadata={'kernelspec': ks})
    nbformat.write(nb, str(path))

def build(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, str(BUILD), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)

class Page(HTMLParser):
    "Links, images, ids and the sidebar's links of one page."
    def __init__(self, text):
        super().__init__()
        self.refs, self.ids, self.nav, self.active, self._in_nav = [], set(), [], [], 0
        self.scripts, self.inputs = [], []
        self.feed(text)
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if 'id' in a: self.ids.add(a['id'])
        if tag == 'nav': self._in_nav += 1
        if tag == 'script': self.scripts.append(a.get('src'))
        if tag == 'input' and self._in_nav: self.inputs.append(a.get('id'))
        for k in ('href', 'src'):
            if a.get(k) is not None: self.refs.append((tag, k, a[k]))
        if self._in_nav and tag == 'a' and a.get('href'):
            self.nav.append(a['href'])
            if 'active' in (a.get('class') or '').split(): self.active.append(a['href'])
    def handle_endtag(self, tag):
        if tag == 'nav': self._in_nav -= 1

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The docs of a copy of the project's notebooks plus a tutorial with a stored plot, built without executing."
    proj = tmp_path_factory.mktemp('proj')
    shutil.copy(ROOT/'settings.ini', proj)
    shutil.copytree(ROOT/'nbs', proj/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', 'sidebar.yml'))
    nbs = proj/'nbs'
    if not (nbs/'index.ipynb').exists():
        write_nb(nbs/'index.ipynb', new_markdown_cell('# sediment_cluster\n> The docs home.'))
    write_nb(nbs/'tutorials'/'01_tiny.ipynb',
             new_markdown_cell('# A tiny tutorial\n> Checks plots, links and sections in a sub-folder.'),
             new_markdown_cell('## A plot\nIt uses [the core module](../00_core.ipynb) and `read_image`.'),
             new_code_cell('plot()', outputs=[new_output('display_data',
                                                         data={'image/png': PNG, 'text/plain': '<Figure>'})]))
    write_nb(nbs/'_draft.ipynb', new_markdown_cell('# Draft\n> not published'))
    out = proj/'site'
    r = build('--nbs', nbs, '--out', out, '--no-execute', '--jobs', 2, cwd=proj)
    assert r.returncode == 0, r.stdout + r.stderr
    pages = {nb: page_of(nb) for nb in notebooks(nbs)}
    return out, nbs, pages, {pg: (out/pg).read_text() for pg in pages.values()}

def test_every_notebook_has_a_page(site):
    out, nbs, pages, html = site
    assert 'index.ipynb' in pages and 'tutorials/01_tiny.ipynb' in pages
    for nb, pg in pages.items(): assert (out/pg).is_file(), f"{nb}: no page {pg}"
    assert not (out/'draft.html').exists() and not (out/'_draft.html').exists()
    for pg, text in html.items():
        assert re.search(r'<title>[^<]+</title>', text), pg
        assert 'In&nbsp;[' not in text and 'Out[' not in text, f"{pg}: shows input/output prompts"

def test_links_and_images_resolve(site):
    out, _, _, html = site
    ids = {}
    def ids_of(target:Path):
        if target not in ids: ids[target] = Page(target.read_text()).ids
        return ids[target]
    for pg, text in html.items():
        p = Page(text)
        assert p.refs, pg
        for tag, attr, ref in p.refs:
            u = urlsplit(ref)
            if u.scheme in ('http', 'https', 'mailto'):
                assert tag == 'a', f"{pg}: <{tag} {attr}={ref}> loads from the network"
                continue
            if u.scheme == 'data' or ref.startswith('data:'): continue
            assert not u.scheme and not ref.startswith('//'), f"{pg}: {ref}"
            target = (out/pg).parent/unquote(u.path) if u.path else out/pg
            assert target.resolve().is_file(), f"{pg}: {attr}={ref} -> {target} missing"
            assert out.resolve() in target.resolve().parents, f"{pg}: {ref} leaves the site"
            if u.fragment: assert u.fragment in ids_of(target.resolve()), f"{pg}: {ref}: no id '{u.fragment}'"

def test_no_network_resources(site):
    for pg, text in site[3].items():
        for pat in (r'<script[^>]+src=["\']?(https?:)?//', r'<link[^>]+href=["\']?(https?:)?//', r'@import',
                    r'<img[^>]+src=["\']?(https?:)?//'):
            assert not re.search(pat, text, re.I), f"{pg}: network resource matching {pat}"

def _norm(path:str) -> str:
    "Normalise `a/../b/./c.html` to `b/c.html`."
    parts = []
    for part in path.split('/'):
        if part == '..': parts.pop()
        elif part not in ('', '.'): parts.append(part)
    return '/'.join(parts)

def test_sidebar_links_every_page_in_order(site):
    _, _, pages, html = site
    for pg, text in html.items():
        p = Page(text)
        linked = {_norm(f'{Path(pg).parent}/{h}') for h in p.nav}
        assert set(pages.values()) <= linked, f"{pg}: sidebar misses {set(pages.values()) - linked}"
        assert [_norm(f'{Path(pg).parent}/{h}') for h in p.active] == [pg], f"{pg}: current page not highlighted alone"
    order = list(dict.fromkeys(_norm(h) for h in Page(html['index.html']).nav))
    top = [pages[nb] for nb in sorted(pages) if '/' not in nb and nb not in ('index.ipynb', 'design.ipynb')]
    nested = [pages[nb] for nb in sorted(pages) if '/' in nb]
    assert order == ['index.html', 'design.html', *top, *nested]
    assert 'Tutorials</span>' in html['index.html']

def test_sidebar_yml_lists_notebooks(site):
    _, nbs, pages, _ = site
    def flat(cs): return [x for c in cs for x in ([c] if isinstance(c, str) else flat(c.get('contents', [])))]
    got = flat(yaml.safe_load((nbs/'sidebar.yml').read_text())['website']['sidebar']['contents'])
    assert got[:2] == ['index.ipynb', 'design.ipynb'] and sorted(got) == sorted(pages)
    repo = ROOT/'nbs'/'sidebar.yml'
    assert repo.exists(), "nbs/sidebar.yml missing: run tools/build_docs.py"
    assert sorted(flat(yaml.safe_load(repo.read_text())['website']['sidebar']['contents'])) == notebooks(ROOT/'nbs'), \
        "nbs/sidebar.yml is stale: run tools/build_docs.py and commit it"

def test_api_docs_from_show_doc(site):
    core = site[3]['core.html']
    cells = re.split(r'(?=<div [^>]*class="jp-Cell )', core)
    sd = [c for c in cells if 'id="read_image"' in c]
    assert len(sd) == 1 and 'celltag_showdoc' in sd[0], "no show_doc section for read_image"
    assert '<span class="nf">read_image</span>' in sd[0] and 'RGB uint8' in sd[0]   # signature and docstring
    assert core.count('<span class="nf">read_image</span>') == 1   # `#| export` source hidden, as nbdev_docs does
    assert 'nbdev_export' not in core and 'default_exp' not in core and 'fastcore.test' not in core  # #| hide cells
    assert 'core.html#read_image' in site[3]['tutorials/tiny.html']   # nbdev's cross-reference, made local

def test_tutorial_page_embeds_its_plot(site):
    tut = site[3]['tutorials/tiny.html']
    assert f'data:image/png;base64,{PNG}' in tut
    assert '<title>A tiny tutorial' in tut and 'href="../core.html"' in tut

def test_execution_and_a_failing_notebook(tmp_path):
    "Executing renders fresh plots; a notebook that raises fails the build, names itself, and keeps the old site."
    shutil.copy(ROOT/'settings.ini', tmp_path)
    nbs, out = tmp_path/'nbs', tmp_path/'site'
    write_nb(nbs/'index.ipynb', new_markdown_cell('# Home\n> A tiny site.'),
             new_code_cell("import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 1)); ax.plot([0, 1]);"),
             new_code_cell("#| slow\nraise RuntimeError('slow cells are not run')"))
    r = build('--nbs', nbs, '--out', out, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'data:image/png;base64,' in (out/'index.html').read_text()
    write_nb(nbs/'01_bad.ipynb', new_markdown_cell('# Bad\n> raises'), new_code_cell('x = 1'), new_code_cell('1/0'))
    r = build('--nbs', nbs, '--out', out, cwd=tmp_path, timeout=120)
    assert r.returncode == 1
    assert '01_bad.ipynb' in r.stderr.splitlines()[0] and 'ZeroDivisionError' in r.stderr
    assert (out/'index.html').exists() and not (out/'bad.html').exists(), "a failed build must leave the old site"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.site.')], "temporary folders left behind"

def search_index(out:Path) -> list:
    "The entries of `search-index.js`: `window.SEARCH_INDEX = [...];`."
    text = (out/'search-index.js').read_text(encoding='utf-8')
    return json.loads(text[text.index('=') + 1:].strip().rstrip(';'))

def test_search_index_covers_every_page(site):
    out, _, pages, html = site
    idx = {e['p']: e for e in search_index(out)}
    assert set(idx) == set(pages.values())
    for pg, e in idx.items():
        assert e['t'] and e['s'] and sum(len(s[2]) for s in e['s']) > 20, f"{pg}: empty search entry"
        for head, hid, _ in e['s']:
            if hid: assert hid in Page(html[pg]).ids, f"{pg}: search entry '{head}' links to a missing id {hid}"
    core = {hid: text for _, hid, text in idx['core.html']['s']}
    assert 'read_image' in core and 'RGB uint8' in core['read_image']   # API docs are searchable
    assert any('store' in text.lower() for e in idx.values() for *_, text in e['s'])

def test_every_page_has_the_search_box(site):
    _, _, _, html = site
    for pg, text in html.items():
        p = Page(text)
        assert 'search-input' in p.inputs, f"{pg}: no search box in the sidebar"
        assert '../' * pg.count('/') + 'search-index.js' in p.scripts, f"{pg}: search-index.js not loaded"
        assert 'window.SEARCH_INDEX' in text and "get('q')" in text, f"{pg}: no search script"

def test_design_page(site):
    _, _, _, html = site
    design = html['design.html']
    assert '<title>Design' in design and 'Two wings and a shared top' in design
    assert 'particles.store' in design and 'cubes.datacube' in design
    assert list(dict.fromkeys(Page(html['index.html']).nav))[:2] == ['index.html', 'design.html']

def test_executed_copies_are_reused(tmp_path):
    "A fresh executed copy is shown instead of running the notebook; a stale one (older than the notebook) is not."
    shutil.copy(ROOT/'settings.ini', tmp_path)
    nbs, out, done = tmp_path/'nbs', tmp_path/'site', tmp_path/'executed'
    cells = [new_markdown_cell('# Home\n> Reuse.'), new_code_cell("raise RuntimeError('executed again')")]
    write_nb(nbs/'index.ipynb', *cells)
    cells[1].outputs = [new_output('stream', name='stdout', text='output of the test run\n')]
    write_nb(done/'index.ipynb', *cells)
    r = build('--nbs', nbs, '--out', out, '--executed', done, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'output of the test run' in (out/'index.html').read_text() and '1 executed copies reused' in r.stdout
    t = (done/'index.ipynb').stat().st_mtime
    os.utime(nbs/'index.ipynb', (t + 10, t + 10))   # the notebook changed after the test run
    r = build('--nbs', nbs, '--out', out, '--executed', done, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and 'executed again' in r.stderr

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')

@pytest.mark.skipif(not CHROMIUM, reason='headless Chromium not installed (apt-get install chromium)')
def test_search_runs_in_a_browser(site, tmp_path):
    "Headless Chromium opens a page from file:// with `?q=`: the script finds the API docs of `read_image`."
    url = (site[0]/'tutorials'/'tiny.html').as_uri() + '?q=read_image'
    r = subprocess.run([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                        '--disable-background-networking', '--disable-component-update', '--disable-sync',
                        f'--user-data-dir={tmp_path}', '--dump-dom', url], capture_output=True, text=True, timeout=120)
    box = re.search(r'<div id="search-results".*?</ul>', r.stdout, re.S)
    assert box, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'href="../core.html#read_image"' in box[0] and '<mark>read_image</mark>' in box[0]
