"""The offline docs build `tools/build_docs.py`: a page per notebook, a sidebar linking all of them,
API docs from `show_doc`, links and images that resolve, no network resources, failures that name the notebook."""
import re, shutil, subprocess, sys
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
    nb = new_notebook(cells=list(cells), metadata={'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}})
    nbformat.write(nb, str(path))

def build(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, str(BUILD), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)

class Page(HTMLParser):
    "Links, images, ids and the sidebar's links of one page."
    def __init__(self, text):
        super().__init__(); self.refs, self.ids, self.nav, self.active, self._in_nav = [], set(), [], [], 0
        self.feed(text)
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if 'id' in a: self.ids.add(a['id'])
        if tag == 'nav': self._in_nav += 1
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
             new_code_cell('plot()', outputs=[new_output('display_data', data={'image/png': PNG, 'text/plain': '<Figure>'})]))
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
        for pat in (r'<script[^>]+src=["\']?(https?:)?//', r'<link[^>]+href=["\']?(https?:)?//', r'@import', r'<img[^>]+src=["\']?(https?:)?//'):
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
    top = [pages[nb] for nb in sorted(pages) if '/' not in nb and nb != 'index.ipynb']
    nested = [pages[nb] for nb in sorted(pages) if '/' in nb]
    assert order == ['index.html', *top, *nested]
    assert 'Tutorials</span>' in html['index.html']

def test_sidebar_yml_lists_notebooks(site):
    _, nbs, pages, _ = site
    def flat(cs): return [x for c in cs for x in ([c] if isinstance(c, str) else flat(c.get('contents', [])))]
    got = flat(yaml.safe_load((nbs/'sidebar.yml').read_text())['website']['sidebar']['contents'])
    assert got[0] == 'index.ipynb' and sorted(got) == sorted(pages)
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
    assert 'Exported source' in core and 'def</span><span class="w"> </span><span class="nf">read_image' in core  # folded source
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
