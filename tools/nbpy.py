#!/usr/bin/env python
"""Edit notebooks as plain text: convert between `.ipynb` and py-percent scripts.

    python tools/nbpy.py topy nbs/12_particles.store.ipynb > /tmp/12_particles.store.py      # notebook -> script
    python tools/nbpy.py tonb /tmp/12_particles.store.py nbs/12_particles.store.ipynb         # script -> notebook

Script format: a code cell starts with a line `# %%`, a markdown cell with `# %% [markdown]` and its lines
are prefixed with `# `. `tonb` keeps the ids and outputs of cells whose source is unchanged (so the notebook
diff shows only real edits) and writes outputs-free cells otherwise; run `nbdev_clean` afterwards.
"""
import json, sys, uuid
from pathlib import Path

def to_py(nb_path) -> str:
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            body = '\n'.join(('# ' + l) if l else '#' for l in src.split('\n'))
            parts.append('# %% [markdown]\n' + body)
        else: parts.append('# %%\n' + src)
    return '\n\n'.join(parts) + '\n'

def parse_py(text:str) -> list:
    "The cells of a py-percent script as (cell_type, source)."
    cells, cur = [], None
    for line in text.split('\n'):
        if line.startswith('# %%'):
            if cur: cells.append(cur)
            cur = ('markdown' if '[markdown]' in line else 'code', [])
            continue
        if cur is None: continue
        cur[1].append(line)
    if cur: cells.append(cur)
    out = []
    for kind, lines in cells:
        while lines and not lines[-1].strip(): lines.pop()
        if kind == 'markdown': lines = [l[2:] if l.startswith('# ') else l[1:] if l.startswith('#') else l for l in lines]
        out.append((kind, '\n'.join(lines)))
    return out

def to_nb(py_path, nb_path):
    nb_path = Path(nb_path)
    old = json.loads(nb_path.read_text()) if nb_path.exists() else None
    reuse = {}
    if old:
        for c in old['cells']: reuse.setdefault((c['cell_type'], ''.join(c['source'])), []).append(c)
    cells = []
    for kind, src in parse_py(Path(py_path).read_text()):
        prev = reuse.get((kind, src))
        if prev: cells.append(prev.pop(0)); continue
        c = dict(cell_type=kind, id=uuid.uuid4().hex[:8], metadata={}, source=src.splitlines(keepends=True))
        if kind == 'code': c.update(execution_count=None, outputs=[])
        cells.append(c)
    nb = old or dict(nbformat=4, nbformat_minor=5, metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3')))
    nb['cells'] = cells
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

if __name__ == '__main__':
    cmd, *args = sys.argv[1:] or ['-h']
    if cmd == 'topy': sys.stdout.write(to_py(args[0]))
    elif cmd == 'tonb': to_nb(*args)
    else: print(__doc__); sys.exit(2 if cmd not in ('-h', '--help') else 0)
