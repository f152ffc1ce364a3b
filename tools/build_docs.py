#!/usr/bin/env python
"""Build the documentation website offline, without Quarto.

    .venv/bin/python tools/build_docs.py [--out _docs] [--nbs nbs] [--no-execute] [--jobs 2] [--timeout 600]

For every notebook under `nbs/` (recursively; names starting with `_` or `.` are skipped) it
1. executes the notebook top to bottom in a fresh shell (execnb, the engine of `nbdev_test`; `--jobs` worker
   processes serve the notebooks; cwd = the notebook's folder; cells flagged with `tst_flags` from
   settings.ini, e.g. `#| slow`, are not run and keep the outputs stored in the notebook; `--no-execute`
   keeps all stored outputs; a notebook that raises or runs past `--timeout` fails the build, named),
2. applies nbdev's own docs processors (`FilterDefaults`, as `nbdev_proc_nbs` does): frontmatter,
   `show_doc` for every exported function and class, `#| hide`, `#| export`, ...; the source of `#| export`
   cells is kept as a folded "Exported source" block after its `show_doc`,
3. renders the result with nbconvert into a self-contained HTML page (images embedded as base64, no
   network resources; TeX math becomes MathML via latex2mathml when installed, no MathJax) with a sidebar
   linking every page.

The sidebar is `nbs/sidebar.yml`, regenerated here with nbdev's `nbdev_sidebar` (index first, then the
numbered notebooks, then one section per folder such as `tutorials/`), so `nbdev_docs` with Quarto shows
the same navigation. Pages are named as Quarto would name them (`00_core.ipynb` -> `core.html`), so nbdev's
cross-reference links resolve locally. The output folder is replaced in one rename at the end: a failed
build leaves the previous `_docs` untouched.
"""
from __future__ import annotations
import argparse, base64, contextlib, html, io, json, mimetypes, os, re, shutil, signal, subprocess, sys, tempfile, time, warnings
from pathlib import Path, PurePosixPath

class DocsError(RuntimeError):
    "A docs build failure; the message is one line naming the notebook."

def find_config(start:Path) -> Path:
    "The folder holding `settings.ini`, searching upwards from `start`."
    for d in [start, *start.parents]:
        if (d/'settings.ini').is_file(): return d
    raise DocsError(f"{start}: no settings.ini here or in a parent folder (run from the project)")

def read_settings(root:Path) -> dict:
    import configparser
    cp = configparser.ConfigParser(interpolation=None); cp.read(root/'settings.ini')
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

def update_sidebar(nbs:Path, root:Path) -> tuple:
    "Write `nbs/sidebar.yml` when the notebook list changed; return its parsed contents and whether it changed."
    import yaml
    txt, p = sidebar_yml(nbs, root), nbs/'sidebar.yml'
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
# Workers: execute a notebook and run nbdev's processors on it, in a pool of processes
# ----------------------------------------------------------------------------------------------------

class NotebookFailed(Exception):
    "A notebook failed in a worker; the message says where and why."

def _execute(nb, src:Path, skip_flags:set):
    "Run the cells of `nb` in a fresh execnb shell, as `nbdev_test` does; flagged cells keep stored outputs."
    from execnb.shell import CaptureShell
    from nbdev.process import extract_directives
    def skip(cell):
        if cell.cell_type != 'code': return True
        if 'nbdev_export' + '(' in cell.source: return True
        d = extract_directives(cell, remove=False)
        if d.get('eval:', [''])[0].lower() == 'false' or skip_flags & d.keys(): return True
        cell.outputs = []
        return False
    k = CaptureShell(src.resolve(), mpl_format='png')   # retina PNGs are 4× the bytes of a page
    try: k.run_all(nb, exc_stop=True, preproc=skip)
    except BaseException as e:
        tb = '\n'.join(k.prettytb(fname=src).strip().splitlines()[-15:])
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise NotebookFailed(f"raised an exception while executing\n{tb}\n{src.name}: cell #{k._cell_idx} raised "
                             f"{type(e).__name__}: {first[:300]}") from None

def _docs_filter():
    "nbdev's `FilterDefaults` plus one processor that keeps `#| export` source as a folded block."
    from execnb.nbio import mk_cell
    from nbdev.process import Processor
    from nbdev.processors import FilterDefaults, rm_export
    class keep_export_src(Processor):
        "Put a folded copy of each `#| export`/`#| exporti` cell after its `show_doc` cells."
        def begin(self):
            res, pending = [], None
            for c in self.nb.cells:
                if pending is not None and not getattr(c, 'has_sd', False): res.append(pending); pending = None
                res.append(c)
                d = getattr(c, 'directives_', {}) or {}
                if c.cell_type == 'code' and d.keys() & {'export', 'exporti'} and 'hide' not in d and c.source.strip():
                    pending = mk_cell('#| code-fold: true\n#| code-summary: "Exported source"\n' + c.source)
            if pending is not None: res.append(pending)
            self.nb.cells = res
    class DocsFilter(FilterDefaults):
        def base_procs(self):
            ps = list(super().base_procs()); i = ps.index(rm_export)
            return ps[:i] + [keep_export_src] + ps[i:]
    return DocsFilter()

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
                if re.search(r'^\s*(import|from)\s', failing, re.M) and not re.search(r'^\s*#\|\s*export', ''.join(c['source']), re.M):
                    hint = ("\n  This cell mixes imports with other code. To render show_doc, nbdev runs every cell that imports "
                            "in a fresh shell (nbdev_docs with Quarto fails the same way): put the imports in a cell of their own.")
                break
    return f"failed in nbdev's docs processors\n{src.name}: nbdev's processors failed{where}: {type(why).__name__}: {why}{hint}"

def process_notebook(src:Path, dst:Path, execute:bool, skip_flags:set):
    "Execute `src` (optionally), apply the docs processors and write the result to `dst`."
    from execnb.nbio import read_nb, write_nb
    os.chdir(src.parent)
    nb = read_nb(src.name)
    if execute: _execute(nb, Path(src.name), skip_flags)
    try: _docs_filter()(nb)
    except Exception as e:
        import traceback; traceback.print_exc()
        raise NotebookFailed(_explain_proc_failure(e, src)) from None
    write_nb(nb, dst)

def worker_loop(execute:bool, skip_flags:set):
    """Serve jobs, one JSON line `{"src", "dst"}` per notebook on stdin, answering one JSON line each.
    Like `nbdev_test`, a process serves several notebooks, each in a fresh shell (imports are paid once)."""
    os.environ['IN_TEST'] = '1'
    answers = os.fdopen(os.dup(1), 'w', buffering=1)
    os.dup2(2, 1)   # whatever the notebooks print outside their cells must not mix with the answers
    for line in sys.stdin:
        job, t0 = json.loads(line), time.time()
        try:
            process_notebook(Path(job['src']), Path(job['dst']), execute, skip_flags)
            res = {'ok': True}
        except NotebookFailed as e: res = {'ok': False, 'error': str(e)}
        except BaseException as e:
            import traceback; traceback.print_exc()
            res = {'ok': False, 'error': f"failed: {type(e).__name__}: {e}"}
        answers.write(json.dumps({**res, 'seconds': time.time() - t0}) + '\n')

class WorkerPool:
    "`jobs` worker processes fed from one queue; a notebook that hangs past `timeout` is killed with its worker."
    def __init__(self, execute:bool, skip_flags:set, timeout:float, jobs:int, logdir:Path, say=print):
        self.execute, self.flags, self.timeout, self.jobs, self.logdir, self.say = execute, skip_flags, timeout, max(1, jobs), logdir, say

    def _start(self, n:int):
        import queue, threading
        cmd = [sys.executable, str(Path(__file__).resolve()), '--worker', '--skip-flags', '|'.join(sorted(self.flags))]
        if not self.execute: cmd.append('--no-execute')
        env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'MPLBACKEND': 'module://matplotlib_inline.backend_inline'}
        log = self.logdir/f'worker{n}.log'
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, 'a'), text=True,
                             env=env, start_new_session=True)
        p.lines, p.log = queue.Queue(), log
        def read():
            for l in p.stdout: p.lines.put(l)
            p.lines.put('')
        threading.Thread(target=read, daemon=True).start()
        return p

    def _kill(self, p):
        with contextlib.suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def run(self, pairs:list) -> tuple:
        "Process (src, dst) pairs; return ({src: seconds}, [DocsError])."
        root = os.path.commonpath([str(s.parent) for s, _ in pairs])
        import queue, threading
        todo, times, errors, n = queue.Queue(), {}, [], [0]
        for pr in pairs: todo.put(pr)
        def slot():
            p = None
            while True:
                try: src, dst = todo.get_nowait()
                except queue.Empty: break
                if p is None: n[0] += 1; p = self._start(n[0])
                p.stdin.write(json.dumps({'src': str(src), 'dst': str(dst)}) + '\n'); p.stdin.flush()
                try: line = p.lines.get(timeout=self.timeout)
                except queue.Empty:
                    self._kill(p); p = None
                    errors.append(DocsError(f"{src}: did not finish within {self.timeout:.0f} s (raise --timeout, or tag long cells `#| slow`)"))
                    continue
                if not line:
                    code = p.wait(); p = None
                    tail = '\n'.join(Path(self.logdir/f'worker{n[0]}.log').read_text().strip().splitlines()[-20:])
                    errors.append(DocsError(f"{src}: its worker process died (exit {code})\n{tail}")); continue
                r = json.loads(line)
                if r['ok']: times[src] = r['seconds']; self.say(f"  {os.path.relpath(src, root)}: {r['seconds']:.1f} s")
                else: errors.append(DocsError(f"{src}: {r['error']}"))
            if p is not None:
                p.stdin.close()
                try: p.wait(timeout=30)
                except subprocess.TimeoutExpired: self._kill(p)
        threads = [threading.Thread(target=slot) for _ in range(min(self.jobs, len(pairs)))]
        for t in threads: t.start()
        for t in threads: t.join()
        return times, errors

# ----------------------------------------------------------------------------------------------------
# Rendering one processed notebook to HTML
# ----------------------------------------------------------------------------------------------------

BODY_TEMPLATE = r"""
{%- extends 'base.html.j2' -%}
{% block in_prompt %}{% endblock in_prompt %}
{% block empty_in_prompt %}{% endblock empty_in_prompt %}
{% block output_area_prompt %}{% endblock output_area_prompt %}
{% block input %}
{%- set fold = cell.metadata.get('docs_fold') -%}
{%- if fold %}<details class="code-fold"{% if fold == 'show' %} open{% endif %}><summary>{{ cell.metadata.get('docs_summary', 'Code') | escape_html }}</summary>{% endif -%}
<div class="code-input">{{ cell.source | highlight_code(metadata=cell.metadata) }}</div>
{%- if fold %}</details>{% endif -%}
{% endblock input %}
{%- block data_widget_view scoped %}
<div class="jp-OutputArea-output widget-note">Interactive widget: open the notebook in Jupyter to use it.</div>
{%- endblock data_widget_view -%}
{% block footer %}{% endblock footer %}
"""

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
                self.register_filter('highlight_code', Highlight2HTML(pygments_lexer=info.get('pygments_lexer', info.get('name')), parent=self))
                self.register_filter('filter_data_type', WidgetsDataTypeFilter(notebook_metadata=self._nb_metadata, parent=self, resources=resources))
                return TemplateExporter.from_notebook_node(self, nb, resources, **kw)
        _exporter = DocsExporter(template_name='lab', extra_loaders=[DictLoader({'docs_body.html.j2': BODY_TEMPLATE})],
                                 template_file='docs_body.html.j2', exclude_input_prompt=True, exclude_output_prompt=True,
                                 embed_images=True)
    return _exporter

_re_qopt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def quarto_opts(cell) -> dict:
    "Pop the leading `#| key: value` Quarto options from a code cell's source."
    lines, opts = cell.source.splitlines(), {}
    while lines and (m := _re_qopt.match(lines[0])):
        opts[m[1]] = m[2].strip('"\''); lines.pop(0)
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
    md = _re_pandoc_link.sub(lambda m: f'\n<div class="source-link"><a href="{html.escape(m[2])}">{m[1]}</a></div>\n', md)
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
            fm = yaml.safe_load(c.source.strip().strip('-')) or {}; continue
        if c.cell_type == 'markdown' and c.source.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
        if c.cell_type == 'code':
            o = quarto_opts(c)
            if str(o.get('include', '')).lower() == 'false': continue
            if str(o.get('echo', '')).lower() == 'false' or tags & _hide_in_tags or c.metadata.get('jupyter', {}).get('source_hidden'):
                c.metadata.setdefault('transient', {})['remove_source'] = True
            if str(o.get('output', '')).lower() == 'false' or tags & _hide_out_tags: c.outputs = []
            if o.get('code-fold', 'false').lower() in ('true', 'show'):
                c.metadata['docs_fold'] = o['code-fold'].lower(); c.metadata['docs_summary'] = o.get('code-summary', 'Code')
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
                if 'href' in o and o['href'] in pages: name = f'<a href="{relpath(pages[o["href"]][0], page)}">{html.escape(name)}</a>'
                else: name = html.escape(name)
                out.append(f'<li class="section"><span class="section-title">{name}</span><ul>{items(o.get("contents"), depth+1)}</ul></li>')
        return ''.join(out)
    home = relpath('index.html', page)
    return (f'<nav class="sidebar" aria-label="Site"><a class="site-title" href="{home}">{html.escape(site_title)}</a>'
            f'<ul class="nav">{items(contents)}</ul></nav>')

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
        text = re.sub(r'<a class="anchor-link".*?</a>', '', inner); text = re.sub(r'<[^>]+>', '', text).strip()
        if text: rows.append(f'<li class="toc-h{lvl}"><a href="#{i}">{text}</a></li>')
    if len(rows) < 2: return ''
    return f'<aside class="toc" aria-label="On this page"><div class="toc-title">On this page</div><ul>{"".join(rows)}</ul></aside>'

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

_re_remote = re.compile(r'<script\b[^>]*\bsrc=["\'](?:https?:)?//[^>]*>\s*</script>|<link\b[^>]*\bhref=["\'](?:https?:)?//[^>]*>|@import\s+url\(["\']?(?:https?:)?//[^)]*\);?', re.I)

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
        _page_css = CSS + HtmlFormatter(style='default').get_style_defs('.highlight') + '\n.highlight { background: transparent; }\n'
    return _page_css

def assemble(title:str, site_title:str, description:str, body:str, sidebar:str, toc:str, source:str) -> str:
    full = title if title == site_title else f'{title} – {site_title}'
    desc = f'<p class="description">{md_inline(description)}</p>' if description else ''
    meta = f'<meta name="description" content="{html.escape(re.sub(r"<[^>]+>", "", md_inline(description)))}">' if description else ''
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
</body>
</html>
"""

# ----------------------------------------------------------------------------------------------------
# The build
# ----------------------------------------------------------------------------------------------------

def build(nbs:Path=None, out:Path=None, execute:bool=True, jobs:int=2, timeout:float=600, skip_flags:str=None,
          update_sidebar_yml:bool=True, quiet:bool=False) -> dict:
    "Build the site from the notebooks in `nbs` into `out`; return {page: seconds}."
    import nbformat
    t_start = time.time()
    root = find_config((nbs or Path.cwd()).resolve())
    cfg = read_settings(root)
    nbs = (nbs or root/cfg.get('nbs_path', 'nbs')).resolve()
    out = (out or root/cfg.get('doc_path', '_docs')).resolve()
    if not nbs.is_dir(): raise DocsError(f"{nbs}: no such notebook folder (use --nbs)")
    flags = set((cfg.get('tst_flags', '') if skip_flags is None else skip_flags).replace('|', ' ').split())
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))

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
        say(f"{'executing and ' if execute else ''}processing {len(nb_paths)} notebooks with {jobs} worker(s)...")
        pool = WorkerPool(execute, flags, timeout, jobs, work, say)
        secs, errors = pool.run([(nbs/p, work/p.replace('/', '__')) for p in nb_paths])
        times = {p: secs.get(nbs/p) for p in nb_paths}
        if errors:
            raise DocsError(f"{len(errors)} notebook(s) failed: " + ', '.join(str(e).split(':')[0] for e in errors)
                            + '\n\n' + '\n\n'.join(map(str, errors)))

        nbs_meta, bodies = {}, {}
        for p in nb_paths:
            with warnings.catch_warnings():   # nbformat's notes about cell ids: the notebooks are nbdev's business
                warnings.simplefilter('ignore'); nb = nbformat.reads((work/(p.replace('/', '__'))).read_text(), as_version=4)
            fm = prepare(nb)
            title = str(fm.get('title') or PurePosixPath(p).stem)
            nbs_meta[p] = (page_name(p), title, str(fm.get('description') or ''))
            bodies[p] = render_body(nb, (nbs/p).parent)
        pages = {p: (v[0], v[1]) for p, v in nbs_meta.items()}
        built = {v[0] for v in nbs_meta.values()}
        site_title = cfg.get('title') or cfg.get('lib_name', 'Documentation')
        site_url = (cfg.get('doc_host', '').rstrip('/') + '/' + cfg.get('doc_baseurl', '').strip('/') + '/') if cfg.get('doc_host') else ''
        site_url = site_url.replace('//', '/').replace(':/', '://') if site_url else ''
        bodies = {p: add_heading_aliases(b) for p, b in bodies.items()}
        ids = {nbs_meta[p][0]: set(re.findall(r'\bid="([^"]+)"', b)) for p, b in bodies.items()}
        for p, (page, title, desc) in nbs_meta.items():
            body = localise_links(bodies[p], page, site_url, ids)
            body = link_notebooks(body, page, p, pages)
            body = embed_local_images(body, (nbs/p).parent)
            body = strip_remote(render_math(body), p)
            body = re.sub(r'<img\b(?![^>]*\balt=)', '<img alt="output image"', body)
            doc = assemble(title, site_title, desc, body, sidebar_html(contents, page, pages, site_title), toc_html(body),
                           f"{nbs.name}/{p}")
            dst = stage/page; dst.parent.mkdir(parents=True, exist_ok=True); dst.write_text(doc, encoding='utf-8')
        if 'index.html' not in built:
            (stage/'index.html').write_text(f'<!DOCTYPE html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={pages[nb_paths[0]][0]}">'
                                            f'<title>{html.escape(site_title)}</title><a href="{pages[nb_paths[0]][0]}">{html.escape(site_title)}</a>')
            say(f"warning: {nbs}/index.ipynb is missing; index.html redirects to {pages[nb_paths[0]][0]}")
        # swap the finished site in: rename the old one away, rename the new one in, then delete the old one
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f'.{out.name}.old-', dir=out.parent)); os.rmdir(old); os.replace(out, old)
        os.chmod(stage, 0o755)   # mkdtemp made it private; a web server must read the site
        os.replace(stage, out)
        if old: shutil.rmtree(old, ignore_errors=True)
        say(f"wrote {len(built)} pages to {out} in {time.time() - t_start:.1f} s")
        return {pages[p][0]: times[p] for p in nb_paths}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if stage.exists(): shutil.rmtree(stage, ignore_errors=True)

# ----------------------------------------------------------------------------------------------------
# Style: a light documentation look, no web fonts
# ----------------------------------------------------------------------------------------------------

CSS = r"""
:root { --side: 270px; --toc: 230px; --fg: #1f2328; --muted: #59636e; --line: #d8dee4; --accent: #1f6feb;
        --code-bg: #f6f8fa; --out-line: #f0a080; --mono: ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
* { box-sizing: border-box; }
html { scroll-padding-top: 1rem; }
body { margin: 0; color: var(--fg); background: #fff; font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", Arial, sans-serif; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
code, pre { font-family: var(--mono); font-size: 0.87em; }
:not(pre) > code { background: var(--code-bg); padding: 0.1em 0.35em; border-radius: 4px; }
.sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: var(--side); overflow-y: auto; padding: 1.2rem 1rem 2rem;
           background: #f7f8fa; border-right: 1px solid var(--line); font-size: 0.93rem; }
.site-title { display: block; font-weight: 700; font-size: 1.15rem; color: var(--fg); margin: 0 0.5rem 1rem; }
.sidebar ul { list-style: none; margin: 0; padding: 0; }
.sidebar li a { display: block; padding: 0.28rem 0.6rem; border-radius: 6px; color: #2f363d; line-height: 1.35; }
.sidebar li a:hover { background: #eaeef2; text-decoration: none; }
.sidebar li a.active { background: #ddf4ff; color: #0550ae; font-weight: 600; box-shadow: inset 3px 0 0 var(--accent); }
.sidebar .section { margin-top: 0.9rem; }
.sidebar .section-title { display: block; padding: 0.2rem 0.6rem; font-size: 0.75rem; font-weight: 700; letter-spacing: 0.06em;
                          text-transform: uppercase; color: var(--muted); }
.page { margin-left: var(--side); display: flex; justify-content: center; gap: 2rem; padding: 0 2rem; }
.content { width: 100%; max-width: 920px; min-width: 0; padding: 2rem 0 4rem; }
.page-header { border-bottom: 1px solid var(--line); margin-bottom: 1.5rem; padding-bottom: 0.8rem; }
.page-header h1 { font-size: 2.1rem; line-height: 1.2; margin: 0 0 0.4rem; }
.description { font-size: 1.15rem; color: var(--muted); margin: 0; }
.toc { position: sticky; top: 0; align-self: flex-start; width: var(--toc); flex: none; max-height: 100vh; overflow-y: auto;
       padding: 2.4rem 0 2rem; font-size: 0.85rem; }
.toc-title { font-weight: 700; margin-bottom: 0.4rem; }
.toc ul { list-style: none; margin: 0; padding: 0 0 0 0.7rem; border-left: 1px solid var(--line); }
.toc li { margin: 0.15rem 0; } .toc a { color: var(--muted); } .toc .toc-h3 { padding-left: 0.8rem; font-family: var(--mono); font-size: 0.8rem; }
@media (max-width: 1400px) { .toc { display: none; } }
@media (max-width: 800px) { .sidebar { position: static; width: auto; border-right: 0; border-bottom: 1px solid var(--line); }
                            .page { margin-left: 0; padding: 0 1rem; } }
h1, h2, h3, h4 { line-height: 1.25; } h2 { margin-top: 2.2rem; padding-bottom: 0.3rem; border-bottom: 1px solid #eaeef2; font-size: 1.5rem; }
h3 { font-size: 1.2rem; margin-top: 1.6rem; }
.anchor-link { visibility: hidden; margin-left: 0.3em; color: var(--muted); font-weight: 400; }
h1:hover .anchor-link, h2:hover .anchor-link, h3:hover .anchor-link, h4:hover .anchor-link { visibility: visible; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; border: 0; }
.jp-RenderedMarkdown, .jp-RenderedHTML { overflow-x: auto; }
th, td { border: 1px solid var(--line); padding: 0.35rem 0.7rem; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; } tbody tr:nth-child(even) { background: #fbfcfd; }
img { max-width: 100%; height: auto; }
math { font-size: 1.12em; } math[display="block"] { margin: 0.8rem 0; }
.jp-Cell { margin: 0.8rem 0; }
.jp-InputArea, .jp-Cell-inputWrapper, .jp-Cell-outputWrapper { display: block; }
.jp-InputPrompt, .jp-OutputPrompt, .jp-Collapser { display: none; }
.code-input .highlight, details.code-fold { border-radius: 6px; }
.code-input .highlight pre { margin: 0; padding: 0.7rem 0.9rem; background: var(--code-bg); border: 1px solid #e5e9ee; border-radius: 6px;
                             overflow-x: auto; line-height: 1.45; }
details.code-fold { border: 1px solid #e5e9ee; background: #fff; }
details.code-fold > summary { cursor: pointer; padding: 0.35rem 0.8rem; color: var(--muted); font-size: 0.85rem; user-select: none; }
details.code-fold[open] > summary { border-bottom: 1px solid #e5e9ee; }
details.code-fold .highlight pre { border: 0; border-radius: 0 0 6px 6px; }
.jp-OutputArea { margin-top: 0.35rem; }
.jp-OutputArea-output pre, .jp-RenderedText pre { margin: 0.2rem 0 0.2rem 0.8rem; padding: 0.3rem 0.8rem; border-left: 2px solid var(--out-line);
                                                  overflow-x: auto; line-height: 1.4; white-space: pre; }
.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"] pre { border-left-color: #d0a000; background: #fffbea; }
.jp-RenderedImage { margin: 0.4rem 0 0.4rem 0.8rem; }
.jp-RenderedHTML { margin-left: 0.8rem; overflow-x: auto; }
.jp-RenderedHTML table, .jp-RenderedHTML .dataframe { font-size: 0.85rem; font-family: var(--mono); }
.jp-MarkdownCell .jp-RenderedMarkdown > :first-child { margin-top: 0.4rem; }
.jp-MarkdownCell .highlight pre, .jp-MarkdownCell pre { padding: 0.7rem 0.9rem; background: var(--code-bg); border: 1px solid #e5e9ee;
                                                        border-radius: 6px; overflow-x: auto; line-height: 1.45; }
.jp-MarkdownCell pre code { background: none; padding: 0; font-size: 1em; }
blockquote { margin: 0.8rem 0; padding: 0.1rem 1rem; border-left: 4px solid var(--line); color: var(--muted); }
.celltag_showdoc { margin: 1.6rem 0 0.6rem; }
.celltag_showdoc .jp-OutputArea-output { border: 1px solid var(--line); border-radius: 8px; padding: 0.2rem 1.1rem 0.6rem;
                                          box-shadow: 0 1px 2px rgba(0,0,0,0.04); background: #fff; }
.celltag_showdoc hr { display: none; }
.celltag_showdoc h2, .celltag_showdoc h3, .celltag_showdoc h4 { font-family: var(--mono); border: 0; margin: 0.8rem 0 0.4rem; font-size: 1.15rem; }
.celltag_showdoc .highlight pre { margin: 0.3rem 0; padding: 0.6rem 0.8rem; background: var(--code-bg); border: 0; border-left: 3px solid var(--accent);
                                  border-radius: 4px; overflow-x: auto; }
.celltag_showdoc em { font-style: normal; color: #2f363d; }
.celltag_showdoc table { display: table; width: 100%; }
.celltag_showdoc td:first-child { font-family: var(--mono); font-size: 0.85rem; white-space: nowrap; }
div.source-link { float: right; font-size: 0.8rem; margin-top: 0.9rem; } div.source-link a { color: var(--muted); }
.widget-note { color: var(--muted); font-style: italic; }
.page-footer { margin-top: 4rem; padding-top: 1rem; border-top: 1px solid var(--line); color: var(--muted); font-size: 0.85rem; }
"""

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', type=Path, help="output folder (default: doc_path of settings.ini, `_docs`)")
    ap.add_argument('--nbs', type=Path, help="notebook folder (default: nbs_path of settings.ini, `nbs`)")
    ap.add_argument('--no-execute', action='store_true', help="use the outputs stored in the notebooks instead of running them")
    ap.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1), help="notebooks processed at once (default %(default)s)")
    ap.add_argument('--timeout', type=float, default=600, help="seconds allowed per notebook (default %(default)s)")
    ap.add_argument('--skip-flags', help="cells with these `#|` flags are not executed (default: tst_flags of settings.ini)")
    ap.add_argument('--keep-sidebar', action='store_true', help="use nbs/sidebar.yml as it is instead of regenerating it")
    ap.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker_loop(not a.no_execute, set((a.skip_flags or '').replace('|', ' ').split())); return
    try: build(a.nbs, a.out, execute=not a.no_execute, jobs=a.jobs, timeout=a.timeout, skip_flags=a.skip_flags,
               update_sidebar_yml=not a.keep_sidebar)
    except DocsError as e:
        print(f"build_docs: FAILED: {e}", file=sys.stderr); sys.exit(1)

if __name__ == '__main__': main()
