#!/usr/bin/env python
"""Build the documentation website offline, without Quarto.

    .venv/bin/python tools/build_docs.py [--out _docs] [--nbs nbs] [--executed DIR | --no-execute] [--jobs 2]

For every notebook under `nbs/` (recursively; names starting with `_` or `.` are skipped), in `--jobs` worker
processes (fastcore's `parallel`, as `nbdev_proc_nbs` runs them), it
1. takes the outputs: from the executed copy `DIR/<path>.ipynb` that the test run saved (tests/test_notebooks.py;
   CI passes `--executed _proc/_executed`) when it is newer than the notebook and the package; else it executes
   the notebook as the tests do (tools/execute_nbs.py: execnb's `CaptureShell` as in `nbdev.test.test_nb`, cells
   flagged with `tst_flags` such as `#| slow` keep their stored outputs; `--timeout` seconds per cell);
   `--no-execute` keeps the stored outputs. A notebook that raises fails the build, named;
2. applies nbdev's own docs processors `FilterDefaults` unchanged (frontmatter, `show_doc` for every exported name,
   `#| hide`, `#| export`; `#| exports` cells are shown folded as "Exported source", as nbdev_docs shows them);
3. renders the result with nbconvert into a self-contained HTML page (images embedded as base64, no network
   resources; TeX becomes MathML via latex2mathml, no MathJax) with a sidebar linking every page and a search box.

Full-text search: `search-index.js` holds the title, section headings and text of every page (a script, since
browsers block fetch() from file://); the search box filters it as one types; `page.html?q=words` searches on load.
The sidebar is `nbs/sidebar.yml`, regenerated with nbdev's `nbdev_sidebar` (index and the design page first, then
the numbered notebooks, then one section per folder such as `tutorials/`), so `nbdev_docs` with Quarto shows the same
navigation. Pages are named as Quarto names them (`00_core.ipynb` -> `core.html`), so nbdev's cross-reference links
resolve locally. The output folder is replaced in one rename at the end: a failed build leaves the old one untouched.
"""
from __future__ import annotations
import argparse, base64, contextlib, html, io, json, mimetypes, os, re, shutil, sys, tempfile, time, warnings
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent))
from execute_nbs import is_fresh  # noqa: E402  (tools/ is not a package)

ASSETS = Path(__file__).resolve().parent/'docs_assets'   # the page template, style and search script

class DocsError(RuntimeError):
    "A docs build failure; the message is one line naming the notebook."

def find_config(start:Path) -> Path:
    "The folder holding `settings.ini`, searching upwards from `start`."
    for d in [start, *start.parents]:
        if (d/'settings.ini').is_file(): return d
    raise DocsError(f"{start}: no settings.ini here or in a parent folder (run from the project)")

def read_settings(root:Path) -> dict:
    import configparser
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(root/'settings.ini')
    return dict(cp['DEFAULT'])

# ----------------------------------------------------------------------------------------------------
# Sidebar and the list of pages
# ----------------------------------------------------------------------------------------------------

def sidebar_yml(nbs:Path, root:Path) -> str:
    "The text of `sidebar.yml` for the notebooks in `nbs`, as nbdev's `nbdev_sidebar` writes it."
    from nbdev.quarto import nbdev_sidebar
    buf = io.StringIO()
    with contextlib.chdir(root), contextlib.redirect_stdout(buf):
        nbdev_sidebar.__wrapped__(path=str(nbs), printit=True, force=True, file_re=r'\.ipynb$')
    return buf.getvalue().rstrip('\n') + '\n'

PINNED = ['index.ipynb', 'design.ipynb']   # first in the sidebar, in this order; then nbdev_sidebar's order

def pin_pages(yml:str, pinned=PINNED) -> str:
    "Move the top-level entries `pinned` of a `sidebar.yml` text to the top of its contents."
    lines = yml.splitlines(keepends=True)
    top = [next((l for l in lines if l.strip() == f'- {p}' and l.startswith('      - ')), None) for p in pinned]
    top = [l for l in top if l]
    rest = [l for l in lines if l not in top]
    i = next((i for i, l in enumerate(rest) if l.lstrip().startswith('- ')), len(rest))
    return ''.join(rest[:i] + top + rest[i:])

def update_sidebar(nbs:Path, root:Path) -> tuple:
    "Write `nbs/sidebar.yml` when the notebook list changed; return its parsed contents and whether it changed."
    import yaml
    txt, p = pin_pages(sidebar_yml(nbs, root)), nbs/'sidebar.yml'
    changed = not p.exists() or p.read_text() != txt
    if changed: p.write_text(txt)
    return yaml.safe_load(txt)['website']['sidebar']['contents'], changed

def flatten(contents) -> list:
    "Notebook paths (relative to nbs, posix) in sidebar order."
    res = []
    for o in contents or []:
        if isinstance(o, str): res.append(o)
        elif isinstance(o, dict):
            if 'href' in o: res.append(o['href'])
            res += flatten(o.get('contents'))
    return res

def page_name(rel:str) -> str:
    "Output page for notebook `rel` as Quarto names it: numbers prefix dropped, `.html`."
    p = PurePosixPath(rel)
    return str(p.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', p.stem) + '.html'))

# ----------------------------------------------------------------------------------------------------
# Executing and processing: nbdev's `FilterDefaults` in a fastcore process pool, as `nbdev_proc_nbs` runs them
# ----------------------------------------------------------------------------------------------------

def _explain_proc_failure(e:Exception, src:Path) -> str:
    "Which cell of `src` broke nbdev's processors, and the usual cause."
    why, msg = e.__cause__ or e, str(e)
    where, hint = '', ''
    if ' :\n' in msg:   # nbdev: "Error in notebook: T in cell N :\n<source>"
        failing = msg.split(' :\n', 1)[1].strip()
        cells = json.loads(src.read_text())['cells']
        for i, c in enumerate(cells):
            if c['cell_type'] == 'code' and failing and failing in ''.join(c['source']):
                where = f" in cell #{i + 1} (`{failing.splitlines()[0][:60]}`)"
                src_i = ''.join(c['source'])
                if re.search(r'^\s*(import|from)\s', failing, re.M) and not re.search(r'^\s*#\|\s*export', src_i, re.M):
                    hint = ("\n  This cell mixes imports with other code. To render show_doc, nbdev runs every cell "
                            "that imports in a fresh shell (nbdev_docs with Quarto fails the same way): put the "
                            "imports in a cell of their own.")
                break
    return (f"failed in nbdev's docs processors\n{src.name}: nbdev's processors failed{where}: "
            f"{type(why).__name__}: {why}{hint}")

def process_nb(job:dict) -> dict:
    """One notebook, in a pool worker: its outputs (`job['mode']`: 'reuse' the executed copy `job['executed']`,
    'execute' it now as the tests do, or keep the 'stored' ones), then nbdev's docs processors `FilterDefaults`
    (as `nbdev.serve_drv.exec_nb` applies them), written to `job['dst']`. Returns {ok, seconds | error}."""
    t0, src = time.time(), Path(job['src'])
    try:
        from execnb.nbio import read_nb, write_nb
        from nbdev.processors import FilterDefaults
        from execute_nbs import NotebookFailed, execute_nb
        os.chdir(src.parent)
        os.environ.update(IN_TEST='1', MPLBACKEND='module://matplotlib_inline.backend_inline')
        if job['mode'] == 'reuse':
            nb = read_nb(job['executed'])
            nb.path_ = str(src)   # pages are named after the source notebook
        elif job['mode'] == 'execute':
            try: nb = execute_nb(src, job['flags'], timeout=job['timeout'])
            except NotebookFailed as e: return {'ok': False, 'error': f"raised an exception while executing\n{e}"}
        else: nb = read_nb(src)
        try: FilterDefaults()(nb)
        except Exception as e: return {'ok': False, 'error': _explain_proc_failure(e, src)}
        write_nb(nb, job['dst'])
        return {'ok': True, 'seconds': time.time() - t0}
    except BaseException as e:
        import traceback
        return {'ok': False, 'error': f"failed: {type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"}

def process_all(jobs:list, n_workers:int) -> list:
    "`process_nb` over `jobs` in `n_workers` spawned processes (fastcore's `parallel`, as `nbdev_proc_nbs`)."
    from concurrent.futures.process import BrokenProcessPool
    from fastcore.parallel import parallel
    try: return list(parallel(process_nb, jobs, n_workers=max(1, n_workers), method='spawn'))
    except BrokenProcessPool as e:
        names = ', '.join(j['src'] for j in jobs)
        raise DocsError(f"{names}: a worker process died ({e}); run with --jobs 1 to see which") from None

# ----------------------------------------------------------------------------------------------------
# Rendering one processed notebook to HTML
# ----------------------------------------------------------------------------------------------------


_exporter = None
def exporter():
    "nbconvert's HTML exporter with our body template, without its BeautifulSoup pass (a third of the time)."
    global _exporter
    if _exporter is None:
        from jinja2 import DictLoader
        from nbconvert import HTMLExporter
        from nbconvert.exporters.templateexporter import TemplateExporter
        from nbconvert.filters.highlight import Highlight2HTML
        from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
        class DocsExporter(HTMLExporter):
            def from_notebook_node(self, nb, resources=None, **kw):
                info = nb.metadata.get('language_info', {})
                resources = self._init_resources(resources)
                lexer = info.get('pygments_lexer', info.get('name'))
                self.register_filter('highlight_code', Highlight2HTML(pygments_lexer=lexer, parent=self))
                self.register_filter('filter_data_type', WidgetsDataTypeFilter(notebook_metadata=self._nb_metadata,
                                                                                parent=self, resources=resources))
                return TemplateExporter.from_notebook_node(self, nb, resources, **kw)
        body_tpl = (ASSETS/'body.html.j2').read_text()
        _exporter = DocsExporter(template_name='lab', extra_loaders=[DictLoader({'docs_body.html.j2': body_tpl})],
                                 template_file='docs_body.html.j2', exclude_input_prompt=True,
                                 exclude_output_prompt=True,
                                 embed_images=True)
    return _exporter

_re_qopt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def quarto_opts(cell) -> dict:
    "Pop the leading `#| key: value` Quarto options from a code cell's source."
    lines, opts = cell.source.splitlines(), {}
    while lines and (m := _re_qopt.match(lines[0])):
        opts[m[1]] = m[2].strip('"\'')
        lines.pop(0)
    cell.source = '\n'.join(lines).strip('\n')
    return opts

_hide_tags = {'remove_cell', 'remove-cell', 'hide', 'hide-cell'}
_hide_in_tags = {'remove_input', 'remove-input', 'hide_input', 'hide-input'}
_hide_out_tags = {'remove_output', 'remove-output', 'hide_output', 'hide-output'}
_re_pandoc_link = re.compile(r'\[([^\]]*)\]\(([^)\s]+)\)\{[^}]*\}')

_re_fence = re.compile(r'(^```.*?^```)', re.S | re.M)
_re_md_link = re.compile(r'\[(`[^`\]]+`)\]\([^)\s]+\)')

def clean_showdoc_md(md:str) -> str:
    "Make nbdev's `show_doc` markdown plain markdown: Quarto's `[source](url){...}` link, no links in code blocks."
    md = _re_pandoc_link.sub(lambda m: f'\n<div class="source-link"><a href="{html.escape(m[2])}">{m[1]}</a></div>\n',
                             md)
    return _re_fence.sub(lambda m: _re_md_link.sub(r'\1', m[1]), md)

def prepare(nb) -> dict:
    "Turn the processed notebook into what the HTML template shows; return its frontmatter."
    import yaml
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor
    coalesce = CoalesceStreamsPreprocessor()
    fm, cells = {}, []
    for c in nb.cells:
        tags = set(c.metadata.get('tags', []))
        if tags & _hide_tags or c.metadata.get('hidden') is True: continue
        if c.cell_type == 'raw' and c.source.lstrip().startswith('---') and not fm:
            fm = yaml.safe_load(c.source.strip().strip('-')) or {}
            continue
        if c.cell_type == 'markdown' and c.source.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'):
            continue
        if c.cell_type == 'code':
            o = quarto_opts(c)
            if str(o.get('include', '')).lower() == 'false': continue
            hidden = c.metadata.get('jupyter', {}).get('source_hidden')
            if str(o.get('echo', '')).lower() == 'false' or tags & _hide_in_tags or hidden:
                c.metadata.setdefault('transient', {})['remove_source'] = True
            if str(o.get('output', '')).lower() == 'false' or tags & _hide_out_tags: c.outputs = []
            if o.get('code-fold', 'false').lower() in ('true', 'show'):
                c.metadata['docs_fold'] = o['code-fold'].lower()
                c.metadata['docs_summary'] = o.get('code-summary', 'Code')
            if re.match(r'\s*show_doc\(', c.source): c.metadata['tags'] = sorted(tags | {'showdoc'})
            if not c.source.strip(): c.metadata.setdefault('transient', {})['remove_source'] = True
            if c.metadata.get('transient', {}).get('remove_source') and not c.outputs: continue
            for out in c.outputs:
                md = out.get('data', {}).get('text/markdown')
                if md: out['data']['text/markdown'] = clean_showdoc_md(md)
            c, _ = coalesce.preprocess_cell(c, {}, 0)
        cells.append(c)
    nb.cells = cells
    return fm

def render_body(nb, nb_dir:Path) -> str:
    res = {'metadata': {'path': str(nb_dir), 'name': ''}}
    body, _ = exporter().from_notebook_node(nb, resources=res)
    return body

def md_inline(s:str) -> str:
    "Markdown of one line (a description) to inline HTML."
    from nbconvert.filters.markdown import markdown2html
    h = markdown2html(str(s)).strip()
    return re.sub(r'^<p>(.*)</p>$', r'\1', h, flags=re.S)

# ----------------------------------------------------------------------------------------------------
# Page assembly
# ----------------------------------------------------------------------------------------------------

def relpath(target:str, page:str) -> str:
    "`target` (site-relative) as seen from `page` (site-relative)."
    return os.path.relpath(target, os.path.dirname(page) or '.').replace(os.sep, '/')

def sidebar_html(contents, page:str, pages:dict, site_title:str) -> str:
    "The navigation sidebar for `page`; `pages` maps notebook path -> (page path, title)."
    def items(cs, depth=0):
        out = []
        for o in cs or []:
            if isinstance(o, str):
                if o not in pages: continue
                p, t = pages[o]
                cur = ' class="active" aria-current="page"' if p == page else ''
                out.append(f'<li><a href="{relpath(p, page)}"{cur}>{html.escape(t)}</a></li>')
            elif isinstance(o, dict):
                name = str(o.get('section', '')).replace('_', ' ').strip().capitalize()
                if 'href' in o and o['href'] in pages:
                    name = f'<a href="{relpath(pages[o["href"]][0], page)}">{html.escape(name)}</a>'
                else: name = html.escape(name)
                out.append(f'<li class="section"><span class="section-title">{name}</span>'
                           f'<ul>{items(o.get("contents"), depth+1)}</ul></li>')
        return ''.join(out)
    home = relpath('index.html', page)
    search = ('<form class="search" role="search" onsubmit="return false"><input type="search" id="search-input" '
              'placeholder="Search the docs" aria-label="Search the docs" autocomplete="off"></form>'
              '<div id="search-results" class="search-results" aria-live="polite" hidden></div>')
    return (f'<nav class="sidebar" aria-label="Site"><a class="site-title" href="{home}">{html.escape(site_title)}</a>'
            f'{search}<ul class="nav">{items(contents)}</ul></nav>')

_re_heading = re.compile(r'<h([23])\s+id="([^"]+)"\s*>(.*?)</h\1>', re.S)

def add_heading_aliases(body:str) -> str:
    "Give headings the lower-case id Quarto would (nbdev links use `core.html#focalstack`)."
    def f(m):
        lvl, i, inner = m.groups()
        alias = i.lower()
        extra = f'<span class="anchor-alias" id="{alias}"></span>' if alias != i else ''
        return f'<h{lvl} id="{i}">{extra}{inner}</h{lvl}>'
    return _re_heading.sub(f, body)

def toc_html(body:str) -> str:
    rows = []
    for lvl, i, inner in _re_heading.findall(body):
        text = re.sub(r'<a class="anchor-link".*?</a>', '', inner)
        text = re.sub(r'<[^>]+>', '', text).strip()
        if text: rows.append(f'<li class="toc-h{lvl}"><a href="#{i}">{text}</a></li>')
    if len(rows) < 2: return ''
    return (f'<aside class="toc" aria-label="On this page"><div class="toc-title">On this page</div>'
            f'<ul>{"".join(rows)}</ul></aside>')

def localise_links(body:str, page:str, site_url:str, ids:dict) -> str:
    """Links into the online docs (nbdev's cross-references) become relative links to the local pages;
    one to an anchor that no page has (a private name without `show_doc`) is unwrapped to its text."""
    if not site_url: return body
    def f(m):
        path, _, frag = html.unescape(m[1]).partition('#')
        if path not in ids: return m[0]
        if frag and frag not in ids[path]: return m[3]
        return f'<a href="{relpath(path, page)}{"#" + frag if frag else ""}"{m[2]}>{m[3]}</a>'
    return re.sub(r'<a href="' + re.escape(site_url) + r'([^"]*)"([^>]*)>(.*?)</a>', f, body, flags=re.S)

def link_notebooks(body:str, page:str, nb_rel:str, pages:dict) -> str:
    "Links to other notebooks (`[core](00_core.ipynb)`) point to their pages, as Quarto does."
    def f(m):
        path, _, frag = html.unescape(m[1]).partition('#')
        target = os.path.normpath(os.path.join(os.path.dirname(nb_rel), path)).replace(os.sep, '/')
        if target not in pages: return m[0]
        return f'href="{relpath(pages[target][0], page)}{"#" + frag if frag else ""}"'
    return re.sub(r'href="(?![a-zA-Z][\w+.-]*:|//|#)([^"]+?\.ipynb(?:#[^"]*)?)"', f, body)

def embed_local_images(body:str, nb_dir:Path) -> str:
    "Inline `<img src=relative>` files as base64 so the page needs nothing beside it."
    def f(m):
        src = html.unescape(m[2])
        if re.match(r'^(data:|https?:|//)', src): return m[0]
        p = (nb_dir/src.split('#')[0].split('?')[0])
        if not p.is_file(): return m[0]
        mime = mimetypes.guess_type(p.name)[0] or 'application/octet-stream'
        return f'{m[1]}"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode()}"'
    return re.sub(r'(<img\b[^>]*?\bsrc=)"([^"]+)"', f, body)

_re_verbatim = re.compile(r'(<(pre|code|script|style|textarea)\b.*?</\2>)', re.S | re.I)
_re_math = re.compile(r'(?<![\\$])\$\$(.+?)\$\$|(?<![\\$\w])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?![\w$])', re.S)

def render_math(body:str) -> str:
    "TeX in `$...$` / `$$...$$` (left verbatim by nbconvert for MathJax) to MathML, which browsers draw with no script."
    try: from latex2mathml.converter import convert
    except ImportError: return body   # without latex2mathml the TeX stays as written
    def tex(m):
        src, display = (m[1], 'block') if m[1] is not None else (m[2], 'inline')
        try: return convert(html.unescape(src).strip(), display=display)
        except Exception: return m[0]
    return ''.join(part if i % 3 == 1 else (_re_math.sub(tex, part) if i % 3 == 0 else '')
                   for i, part in enumerate(_re_verbatim.split(body)))

_re_remote = re.compile(r'<script\b[^>]*\bsrc=["\'](?:https?:)?//[^>]*>\s*</script>'
                        r'|<link\b[^>]*\bhref=["\'](?:https?:)?//[^>]*>'
                        r'|@import\s+url\(["\']?(?:https?:)?//[^)]*\);?', re.I)

def strip_remote(body:str, name:str) -> str:
    "Drop scripts, stylesheets and imports fetched from the network (CDNs): pages work offline."
    found = _re_remote.findall(body)
    if found: print(f"  {name}: removed {len(found)} network resource(s), e.g. {found[0][:80]}", file=sys.stderr)
    return _re_remote.sub('', body)

_page_css = None
def page_css() -> str:
    global _page_css
    if _page_css is None:
        from pygments.formatters import HtmlFormatter
        pyg = HtmlFormatter(style='default').get_style_defs('.highlight')
        _page_css = (ASSETS/'site.css').read_text() + pyg + '\n.highlight { background: transparent; }\n'
    return _page_css

# ----------------------------------------------------------------------------------------------------
# Full-text search: an index of every page's sections, embedded as a script (fetch() of file:// is blocked)
# ----------------------------------------------------------------------------------------------------

_re_section = re.compile(r'(<h[23]\s+id="[^"]+"\s*>.*?</h[23]>)', re.S)
_re_drop = re.compile(r'<(script|style|math)\b.*?</\1>|<a class="anchor-link".*?</a>'
                      r'|<div class="source-link">.*?</div>',
                      re.S | re.I)

_re_inline = re.compile(r'</?(?:span|a|code|em|strong|b|i|mark|sub|sup|kbd|var|abbr)\b[^>]*>', re.I)

def html_text(fragment:str) -> str:
    "The visible text of an HTML fragment, whitespace collapsed (inline tags joined, block tags spaced)."
    return ' '.join(html.unescape(re.sub(r'<[^>]+>', ' ', _re_inline.sub('', _re_drop.sub(' ', fragment)))).split())

def page_sections(body:str, description:str='', limit:int=4000) -> list:
    "[heading, id, text]: the text before the first heading, then each h2/h3 section of `body` (cut at `limit`)."
    res, head, hid = [], '', ''
    for i, part in enumerate(_re_section.split(body)):
        if i % 2:
            m = _re_heading.match(part)
            head, hid = html_text(m[3]), m[2]
            continue
        text = html_text(part)
        if i == 0: text = ' '.join([description, text]).strip()
        if text or head: res.append([head, hid, text[:limit]])
    return res

def search_index_js(index:list) -> str:
    "The search index as a script: `window.SEARCH_INDEX = [{p: page, t: title, s: [[heading, id, text], ...]}, ...]`."
    return '// generated by tools/build_docs.py: the search index of the site\nwindow.SEARCH_INDEX = ' + json.dumps(
        index, ensure_ascii=False, separators=(',', ':')).replace('</', '<\\/') + ';\n'


def search_js() -> str: return (ASSETS/'search.js').read_text()

def assemble(title:str, site_title:str, description:str, body:str, sidebar:str, toc:str, source:str,
             root:str='') -> str:
    full = title if title == site_title else f'{title} – {site_title}'
    desc = f'<p class="description">{md_inline(description)}</p>' if description else ''
    plain = html.escape(re.sub(r'<[^>]+>', '', md_inline(description)))
    meta = f'<meta name="description" content="{plain}">' if description else ''
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(full)}</title>
{meta}
<meta name="generator" content="tools/build_docs.py (nbdev processors + nbconvert)">
<style>
{page_css()}
</style>
</head>
<body>
{sidebar}
<div class="page">
<main class="content">
<header class="page-header"><h1 class="title">{md_inline(title)}</h1>{desc}</header>
{body}
<footer class="page-footer">Generated from <code>{html.escape(source)}</code>.</footer>
</main>
{toc}
</div>
<script src="{root}search-index.js"></script>
<script data-root="{root}">{search_js()}</script>
</body>
</html>
"""

# ----------------------------------------------------------------------------------------------------
# The build
# ----------------------------------------------------------------------------------------------------

def build(nbs:Path=None, out:Path=None, execute:bool=True, jobs:int=2, timeout:float=600, skip_flags:str=None,
          update_sidebar_yml:bool=True, quiet:bool=False, executed:Path=None) -> dict:
    """Build the site from the notebooks in `nbs` into `out`; return {page: seconds}. Notebooks whose executed copy
    `executed/<path>` is newer than the notebook and the package are not run again."""
    import nbformat
    t_start = time.time()
    root = find_config((nbs or Path.cwd()).resolve())
    cfg = read_settings(root)
    nbs = (nbs or root/cfg.get('nbs_path', 'nbs')).resolve()
    out = (out or root/cfg.get('doc_path', '_docs')).resolve()
    if not nbs.is_dir(): raise DocsError(f"{nbs}: no such notebook folder (use --nbs)")
    flags = set((cfg.get('tst_flags', '') if skip_flags is None else skip_flags).replace('|', ' ').split())
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    executed = executed.resolve() if executed else None
    lib = root/cfg.get('lib_path', cfg.get('lib_name', ''))

    if update_sidebar_yml:
        contents, changed = update_sidebar(nbs, root)
        if changed: say(f"wrote {nbs/'sidebar.yml'}")
    else:
        import yaml
        contents = yaml.safe_load((nbs/'sidebar.yml').read_text())['website']['sidebar']['contents']
    nb_paths = [p for p in flatten(contents) if p.endswith('.ipynb') and (nbs/p).is_file()]
    if not nb_paths: raise DocsError(f"{nbs}: no notebooks to document")
    seen = {}
    for p in nb_paths:
        q = page_name(p)
        if q in seen: raise DocsError(f"{nbs/p}: would overwrite page {q} of {nbs/seen[q]}; rename one notebook")
        seen[q] = p

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f'.{out.name}.building-', dir=out.parent))
    work = Path(tempfile.mkdtemp(prefix='build_docs-'))
    try:
        def mode(p):
            if not execute: return 'stored'
            return 'reuse' if executed and is_fresh(executed/p, nbs/p, lib) else 'execute'
        jobs_ = [{'src': str(nbs/p), 'dst': str(work/p.replace('/', '__')), 'mode': mode(p),
                  'executed': str(executed/p) if executed else None,
                  'flags': sorted(flags), 'timeout': int(timeout) if timeout else None} for p in nb_paths]
        n = {m: sum(j['mode'] == m for j in jobs_) for m in ('reuse', 'execute', 'stored')}
        say(f"processing {len(nb_paths)} notebooks with {jobs} worker(s): " + ', '.join(
            f"{k} {what}" for what, k in [(f'executed copies reused from {executed}', n['reuse']),
                                          ('executed now', n['execute']), ('with stored outputs', n['stored'])] if k))
        results = process_all(jobs_, jobs)
        errors = [f"{nbs/p}: {r['error']}" for p, r in zip(nb_paths, results) if not r['ok']]
        if errors:
            raise DocsError(f"{len(errors)} notebook(s) failed: " + ', '.join(e.split(':')[0] for e in errors)
                            + '\n\n' + '\n\n'.join(errors))
        times = {p: r['seconds'] for p, r in zip(nb_paths, results)}
        for p, j in zip(nb_paths, jobs_): say(f"  {p}: {times[p]:.1f} s ({j['mode']})")

        nbs_meta, bodies = {}, {}
        for p in nb_paths:
            with warnings.catch_warnings():   # nbformat's notes about cell ids: the notebooks are nbdev's business
                warnings.simplefilter('ignore')
                nb = nbformat.reads((work/(p.replace('/', '__'))).read_text(), as_version=4)
            fm = prepare(nb)
            title = str(fm.get('title') or PurePosixPath(p).stem)
            nbs_meta[p] = (page_name(p), title, str(fm.get('description') or ''))
            bodies[p] = render_body(nb, (nbs/p).parent)
        pages = {p: (v[0], v[1]) for p, v in nbs_meta.items()}
        built = {v[0] for v in nbs_meta.values()}
        site_title = cfg.get('title') or cfg.get('lib_name', 'Documentation')
        host, base = cfg.get('doc_host', '').rstrip('/'), cfg.get('doc_baseurl', '').strip('/')
        site_url = (host + '/' + base + '/') if host else ''
        site_url = site_url.replace('//', '/').replace(':/', '://') if site_url else ''
        bodies = {p: add_heading_aliases(b) for p, b in bodies.items()}
        ids = {nbs_meta[p][0]: set(re.findall(r'\bid="([^"]+)"', b)) for p, b in bodies.items()}
        index = []
        for p, (page, title, desc) in nbs_meta.items():
            body = localise_links(bodies[p], page, site_url, ids)
            body = link_notebooks(body, page, p, pages)
            body = embed_local_images(body, (nbs/p).parent)
            body = strip_remote(render_math(body), p)
            body = re.sub(r'<img\b(?![^>]*\balt=)', '<img alt="output image"', body)
            index.append({'p': page, 't': title, 's': page_sections(body, desc)})
            side = sidebar_html(contents, page, pages, site_title)
            doc = assemble(title, site_title, desc, body, side, toc_html(body),
                           f"{nbs.name}/{p}", '../' * page.count('/'))
            dst = stage/page
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(doc, encoding='utf-8')
        (stage/'search-index.js').write_text(search_index_js(index), encoding='utf-8')
        if 'index.html' not in built:
            first = pages[nb_paths[0]][0]
            (stage/'index.html').write_text(f'<!DOCTYPE html><meta charset="utf-8">'
                                            f'<meta http-equiv="refresh" content="0; url={first}">'
                                            f'<title>{html.escape(site_title)}</title><a href="{first}">'
                                            f'{html.escape(site_title)}</a>')
            say(f"warning: {nbs}/index.ipynb is missing; index.html redirects to {pages[nb_paths[0]][0]}")
        # swap the finished site in: rename the old one away, rename the new one in, then delete the old one
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f'.{out.name}.old-', dir=out.parent))
            os.rmdir(old)
            os.replace(out, old)
        os.chmod(stage, 0o755)   # mkdtemp made it private; a web server must read the site
        os.replace(stage, out)
        if old: shutil.rmtree(old, ignore_errors=True)
        say(f"wrote {len(built)} pages to {out} in {time.time() - t_start:.1f} s")
        return {pages[p][0]: times[p] for p in nb_paths}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if stage.exists(): shutil.rmtree(stage, ignore_errors=True)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', type=Path, help="output folder (default: doc_path of settings.ini, `_docs`)")
    ap.add_argument('--nbs', type=Path, help="notebook folder (default: nbs_path of settings.ini, `nbs`)")
    ap.add_argument('--no-execute', action='store_true',
                    help="use the outputs stored in the notebooks instead of running them")
    ap.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                    help="notebooks processed at once (default %(default)s)")
    ap.add_argument('--executed', type=Path, help="folder of executed notebooks (`<path under nbs>`, as "
                    "tests/test_notebooks.py saves them): reused when newer than the notebook and the package, "
                    "else the notebook is executed")
    ap.add_argument('--timeout', type=float, default=600,
                    help="seconds allowed per cell when executing (default %(default)s)")
    ap.add_argument('--skip-flags',
                    help="cells with these `#|` flags are not executed (default: tst_flags of settings.ini)")
    ap.add_argument('--keep-sidebar', action='store_true',
                    help="use nbs/sidebar.yml as it is instead of regenerating it")
    a = ap.parse_args(argv)
    try: build(a.nbs, a.out, execute=not a.no_execute, jobs=a.jobs, timeout=a.timeout, skip_flags=a.skip_flags,
               update_sidebar_yml=not a.keep_sidebar, executed=a.executed)
    except DocsError as e:
        print(f"build_docs: FAILED: {e}", file=sys.stderr)
        sys.exit(1)

if __name__ == '__main__':
    import build_docs   # as a module: the spawned workers import `build_docs.process_nb`
    build_docs.main()
