"House rules of the notebooks that nbdev itself does not check (issue 12): small exported cells, imports apart."
import ast, json, re, statistics
from pathlib import Path
import pytest

NBS = Path(__file__).resolve().parents[1]/'nbs'
NOTEBOOKS = sorted(p for p in NBS.rglob('*.ipynb')
                   if not any(s.startswith(('_', '.')) for s in p.relative_to(NBS).parts))
EXPORT = re.compile(r'^\s*#\|\s*export')

def code_cells(nb:Path) -> list: return [''.join(c['source']) for c in json.loads(nb.read_text())['cells']
                                       if c['cell_type'] == 'code']

def exported_sizes() -> dict:
    "Lines of every exported cell (without its `#| export` line), by notebook."
    return {nb.relative_to(NBS).as_posix(): [len(s.splitlines()) - 1 for s in code_cells(nb) if EXPORT.match(s)]
            for nb in NOTEBOOKS}

def test_exported_cells_are_small():
    sizes = exported_sizes()
    too_long = {nb: max(v) for nb, v in sizes.items() if v and max(v) > 40}
    assert not too_long, f"exported cells over 40 lines: {too_long}"
    assert statistics.median([n for v in sizes.values() for n in v]) <= 10

def _mixes_imports(src:str) -> bool:
    "A cell with an import statement and other code (nbdev's doc processors run import cells on their own)."
    try: body = ast.parse(src).body
    except SyntaxError: return False
    imports = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))]
    rest = [n for n in body if n not in imports and 'nbdev_export' not in ast.unparse(n)]
    return bool(imports) and bool(rest)

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.relative_to(NBS).as_posix() for p in NOTEBOOKS])
def test_imports_in_cells_of_their_own(nb):
    bad = [s.splitlines()[0] for s in code_cells(nb) if not EXPORT.match(s) and _mixes_imports(s)]
    assert not bad, f"{nb.name}: move the imports of these cells into a cell of their own: {bad}"

def test_the_rule_catches_a_mixed_cell():
    assert _mixes_imports('import numpy as np\nx = np.zeros(3)')
    assert not _mixes_imports('import numpy as np\nimport pandas as pd')
    assert not _mixes_imports('import nbdev\nnbdev.nbdev_export()')
