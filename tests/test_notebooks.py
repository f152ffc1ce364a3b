"""Run every notebook top to bottom as `nbdev_test` does, one pytest item per notebook, and save the executed
notebook (to `$SEDIMENT_EXECUTED_NBS`, default `_proc/_executed`) so the docs build can show its outputs
without running it again (`tools/build_docs.py --executed _proc/_executed`)."""
import sys
from pathlib import Path
import pytest
from nbdev.config import get_config

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
sys.path.insert(0, str(ROOT/'tools'))
from execute_nbs import NotebookFailed, execute_nb, executed_dir, save_executed

NOTEBOOKS = sorted(p for p in NBS.rglob('*.ipynb')
                   if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))

def test_notebooks_found(): assert len(NOTEBOOKS) >= 3, NOTEBOOKS

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[str(p.relative_to(NBS)) for p in NOTEBOOKS])
def test_notebook(nb, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))   # as nbdev's runner: the checkout's package, not an installed one
    out = executed_dir(ROOT)
    dst = out/nb.relative_to(NBS) if out else None
    if dst: dst.unlink(missing_ok=True)      # a failed run leaves no executed copy for the docs to reuse
    try: executed = execute_nb(nb, get_config().tst_flags.split())
    except NotebookFailed as e: pytest.fail(str(e), pytrace=False)
    if dst: save_executed(executed, dst)
