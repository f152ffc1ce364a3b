"""Execute a notebook the way `nbdev.test.test_nb` does, and keep the executed notebook.

`nbdev.test.test_nb` runs a notebook in execnb's `CaptureShell` and throws the outputs away. CI needs them twice:
the tests check that every notebook runs, the docs show the outputs. `execute_nb` is `test_nb` (same skip rules:
`tst_flags` such as `#| slow` and `#| cuda`, `#| eval: false`, `nbdev_export()` cells, `skip_exec` frontmatter,
non-Python notebooks; cwd = the notebook's folder; `IN_TEST=1`) returning the executed notebook, so
`tests/test_notebooks.py` can save it and `tools/build_docs.py --executed DIR` can render it without running the
notebook again. Cells that are skipped keep the outputs stored in the notebook.
"""
from __future__ import annotations
import os
from contextlib import chdir
from pathlib import Path

# Where the test run saves executed notebooks (`<dir>/<path relative to nbs>`); .ci/run points the docs build at it.
EXECUTED_ENV, EXECUTED_DEFAULT = 'SEDIMENT_EXECUTED_NBS', '_proc/_executed'   # `_`: Quarto skips it in _proc

class NotebookFailed(Exception):
    "A cell raised; the message names the notebook and the cell and holds the traceback."

def executed_dir(root:Path) -> Path|None:
    "The folder for executed notebooks: `$SEDIMENT_EXECUTED_NBS` (empty: none), else `_proc/_executed` under `root`."
    d = os.environ.get(EXECUTED_ENV, EXECUTED_DEFAULT)
    return (Path(root)/d).resolve() if d else None

def execute_nb(src:Path, skip_flags=(), timeout:int|None=None, mpl_format:str='png'):
    "Run `src` top to bottom in a fresh `CaptureShell` as `nbdev.test.test_nb` does; return the notebook with outputs."
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    from fastcore.basics import str2bool
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor, extract_directives, nb_lang
    src, flags = Path(src).resolve(), set(skip_flags)
    os.environ['IN_TEST'] = '1'
    fm = getattr(NBProcessor(src, procs=FrontmatterProc, process=True).nb, 'frontmatter_', {})
    nb = read_nb(src)   # executed as read: nbdev's frontmatter processor rewrites the title cell
    if str2bool(fm.get('skip_exec', False)) or nb_lang(nb) != 'python': return nb
    def skip(cell):
        if cell.cell_type != 'code' or 'nbdev_export' + '(' in cell.source: return True
        d = extract_directives(cell, remove=False)
        if d.get('eval:', [''])[0].lower() == 'false' or flags & d.keys(): return True
        cell.outputs = []
        return False
    k = CaptureShell(src, mpl_format=mpl_format, timeout=timeout)   # png: retina images are 4× the bytes of a page
    try:
        with chdir(src.parent): k.run_all(nb, exc_stop=True, preproc=skip)
    except BaseException as e:
        raise NotebookFailed(f"{src.name}: cell #{k._cell_idx} raised {type(e).__name__}: "
                             f"{(str(e).strip().splitlines() or [''])[0][:300]}\n{k.prettytb(fname=src)}") from None
    return nb

def save_executed(nb, dst:Path):
    "Write the executed notebook `nb` to `dst` atomically (a reader never sees half a file)."
    from execnb.nbio import write_nb
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f'.{dst.name}.{os.getpid()}.tmp')
    write_nb(nb, tmp)
    os.replace(tmp, dst)

def is_fresh(executed:Path, src:Path, lib:Path|None=None) -> bool:
    "Whether `executed` is newer than the notebook `src` and every module under `lib` (else run `src` again)."
    if not executed.is_file(): return False
    newest = src.stat().st_mtime
    if lib and lib.is_dir(): newest = max([newest, *(p.stat().st_mtime for p in lib.rglob('*.py'))])
    return executed.stat().st_mtime >= newest
