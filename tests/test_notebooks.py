"Run every notebook top to bottom with nbdev's runner, one pytest item per notebook."
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook  # aliased: pytest would collect a name starting with test_

NBS = Path(__file__).resolve().parents[1]/'nbs'
NOTEBOOKS = sorted(p for p in NBS.rglob('*.ipynb')
                   if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))

def test_notebooks_found(): assert len(NOTEBOOKS) >= 3, NOTEBOOKS

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[str(p.relative_to(NBS)) for p in NOTEBOOKS])
def test_notebook(nb):
    flags = get_config().tst_flags.split()
    ok, secs = run_notebook(nb, skip_flags=flags, basepath=NBS.parent)
    assert ok, f"{nb.name} failed (see the cell error above)"
