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

def test_executed_copy_keeps_outputs_and_skips_flagged_cells(tmp_path):
    "What the docs reuse: outputs of the cells run, stored outputs of `#| slow` cells, cwd = the notebook's folder."
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output
    slow = new_code_cell("#| slow\nraise RuntimeError('not run')", outputs=[new_output('stream', text='stored\n')])
    nb = new_notebook(cells=[new_code_cell("import os\nprint(os.path.basename(os.getcwd()))"), slow],
                      metadata={'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}})
    (tmp_path/'here').mkdir()
    nbformat.write(nb, str(tmp_path/'here'/'t.ipynb'))
    save_executed(execute_nb(tmp_path/'here'/'t.ipynb', ['slow']), tmp_path/'out'/'t.ipynb')
    cells = nbformat.read(str(tmp_path/'out'/'t.ipynb'), as_version=4).cells
    assert cells[0].outputs[0].text == 'here\n' and cells[1].outputs[0].text == 'stored\n'
