"""Write README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto, which is not
installable offline). Markdown cells are copied, code cells become fenced Python, `#| hide` cells and
nbdev directives are dropped, outputs are left out so the README does not change with every run; relative
links to notebooks (`[design](design.ipynb)`, which the docs turn into pages) point into `nbs/`.
Usage: python tools/make_readme.py [--check]   (--check exits 1 when README.md is out of date)."""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r'^\s*#\s*\|')
NB_LINK = re.compile(r'\]\((?![a-zA-Z][\w+.-]*:|/|#)([^)\s]+\.ipynb(?:#[^)\s]*)?)\)')

def link_notebooks(md:str) -> str:
    "Relative links to notebooks, as written in nbs/index.ipynb, made relative to the repository root."
    return NB_LINK.sub(lambda m: f"](nbs/{m[1]})", md)

def cell_markdown(cell) -> str:
    src = ''.join(cell['source'])
    if cell['cell_type'] == 'markdown': return link_notebooks(src.strip())
    lines = src.splitlines()
    if any(re.match(r'^\s*#\s*\|\s*(hide|exporti?|default_exp)\b', l) for l in lines): return ''
    code = '\n'.join(l for l in lines if not DIRECTIVE.match(l)).strip()
    return f"```python\n{code}\n```" if code else ''

def readme_text(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    cells = json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells']
    parts = [t for t in map(cell_markdown, cells) if t]
    note = '<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->'
    return note + '\n\n' + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, readme = readme_text(), ROOT/'README.md'
    if '--check' in sys.argv:
        ok = readme.exists() and readme.read_text(encoding='utf-8') == text
        if not ok: print('README.md is out of date: run python tools/make_readme.py', file=sys.stderr)
        sys.exit(0 if ok else 1)
    readme.write_text(text, encoding='utf-8')
