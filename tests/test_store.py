"The particle store and its batch run: kill -9 and resume, parallel and dask runs, bad stacks, lazy reads."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from sediment_cluster import core
from sediment_cluster.particles import store as st
from sediment_cluster.core import InputError, write_image
from sediment_cluster.particles.extract import PARTICLE_COLUMNS, UM_COLUMNS, extract_particles
from sediment_cluster.particles.store import ParticleStore, extract_store
from sediment_cluster.particles.synth import synth_plates

SIZE, CROP, N_STACKS = (320, 256), 40, 6
KW = dict(size=CROP, progress=False)


SEEN = []
def slow_extract(stack, **kw):
    "`extract_particles`, slowed so that a kill lands between stacks; remembers what it extracted."
    time.sleep(.15)
    SEEN.append(stack.stack_id)
    return extract_particles(stack, **kw)


def store_files(path):
    "Every byte of the store's public files, by relative path."
    path = Path(path)
    files = [path/n for n in (st.TABLE, st.ERRORS)] + sorted((path/st.CROPS).rglob('*'))
    return {str(f.relative_to(path)): f.read_bytes() for f in files if f.is_file()}


def assert_same_store(a, b):
    fa, fb = store_files(a), store_files(b)
    assert sorted(fa) == sorted(fb)
    assert all(fa[k] == fb[k] for k in fa), [k for k in fa if fa[k] != fb[k]]


@pytest.fixture(scope='module')
def plates(tmp_path_factory):
    return synth_plates(tmp_path_factory.mktemp('plates')/'p', n_stacks=N_STACKS, random_state=7,
                        size=SIZE, progress=False)


@pytest.fixture(scope='module')
def ref(plates, tmp_path_factory):
    "The serial, uninterrupted run every other run must reproduce byte for byte."
    return extract_store(plates, tmp_path_factory.mktemp('ref')/'store', workers=1, **KW)


def test_reference_store(ref):
    t = ref.table
    assert len(ref) == len(t) > 0 and (ref.n_layers, ref.size) == (6, CROP)
    assert t.particle_id.tolist() == list(range(len(t))) and t.particle_id.dtype == np.int64
    assert list(t.columns) == ['particle_id', *PARTICLE_COLUMNS] and t.chopped.dtype == bool and t.clumped.dtype == bool
    assert t.stack_id.is_monotonic_increasing and t.stack_id.nunique() > 1
    assert len(ref.errors) == 0 and not (ref.path/st.PARTS).exists()
    assert ref.meta['complete'] and ref.meta['n_particles'] == len(ref)


def test_crops_are_the_extractors(ref, plates):
    from sediment_cluster.core import read_stack
    df, crops = extract_particles(read_stack(plates/'s0002', 6), size=CROP)
    rows = ref.table.stack_id == 's0002'
    df['stack_id'] = df.stack_id.astype(ref.table.stack_id.dtype)  # parquet reads strings back as `str`
    pd.testing.assert_frame_equal(ref.table[rows].drop(columns='particle_id').reset_index(drop=True), df)
    np.testing.assert_array_equal(ref.crops.get_orthogonal_selection(np.flatnonzero(rows)), crops)


def test_lazy_read(ref, tmp_path):
    assert isinstance(ref.crops, zarr.Array) and not isinstance(ref.crops, np.ndarray)
    assert 'table' not in vars(ParticleStore.open(ref.path))   # opening reads no table
    # keep only particle 3's chunk: reading it (and the table) must not need any other file
    import shutil
    shutil.copytree(ref.path, tmp_path/'s')
    for f in (tmp_path/'s'/st.CROPS).glob('c.*'):
        if not f.name.startswith('c.3.'): f.unlink()
    s = ParticleStore.open(tmp_path/'s')
    np.testing.assert_array_equal(s[3], ref[3])
    np.testing.assert_array_equal(s.crop(3), np.asarray(ref.crops[3]))
    assert s[3].shape == (6, CROP, CROP, 3) and s[3].dtype == np.uint8
    n = 0
    for rows, crops in ref.batches(4):
        assert len(rows) == len(crops) and rows.particle_id.iloc[0] == n
        n += len(rows)
    assert n == len(ref)


def test_rerun_after_completion_does_nothing(ref, plates):
    before = {p: os.stat(ref.path/p).st_mtime_ns for p in (st.TABLE, st.CROPS + '/zarr.json', st.META)}
    again = extract_store(plates, ref.path, workers=1, **KW)
    assert len(again) == len(ref)
    assert before == {p: os.stat(ref.path/p).st_mtime_ns for p in before}


def test_changed_parameters_refused(ref, plates):
    with pytest.raises(InputError, match=f'extracted with size={CROP}, not 32'):
        extract_store(plates, ref.path, size=32, progress=False)
    with pytest.raises(InputError, match='extracted with pixel_size_um=None, not 2.5'):
        extract_store(plates, ref.path, size=CROP, pixel_size_um=2.5, progress=False)


def test_pixel_size_adds_um_columns(ref, plates, tmp_path):
    s = extract_store(plates, tmp_path/'um', workers=1, pixel_size_um=2.5, **KW)
    assert list(s.table.columns) == ['particle_id', *PARTICLE_COLUMNS, *UM_COLUMNS]
    pd.testing.assert_frame_equal(s.table[ref.table.columns], ref.table)


def test_two_workers_same_store(ref, plates, tmp_path):
    assert_same_store(extract_store(plates, tmp_path/'par', workers=2, **KW).path, ref.path)


def test_dask_cluster_same_store(ref, plates, tmp_path):
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        s = extract_store(plates, tmp_path/'dask', scheduler=cluster.scheduler_address, **KW)
    assert_same_store(s.path, ref.path)


def test_unreachable_scheduler(plates, tmp_path, monkeypatch):
    monkeypatch.setattr(core, 'DASK_TIMEOUT', '1s')
    with pytest.raises(InputError, match='cannot connect to a dask scheduler'):
        extract_store(plates, tmp_path/'x', scheduler='tcp://127.0.0.1:9', **KW)


RUN = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    from test_store import slow_extract
    from sediment_cluster.particles.store import extract_store
    if __name__ == '__main__':
        extract_store({plates!r}, {out!r}, size={crop}, workers={workers}, progress=False, extractor=slow_extract)
''')


def test_kill_9_and_resume(ref, plates, tmp_path, workers=2):
    out = tmp_path/'killed'
    script = tmp_path/'run.py'
    script.write_text(RUN.format(tests=str(Path(__file__).parent), plates=str(plates), out=str(out),
                                 crop=CROP, workers=workers))
    p = subprocess.Popen([sys.executable, str(script)], start_new_session=True, stderr=subprocess.PIPE)
    t0 = time.time()
    while len(st._committed(out/st.PARTS)) < 2:
        assert p.poll() is None, p.stderr.read().decode()
        assert time.time() - t0 < 120, 'no progress'
        time.sleep(.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()  # kill -9 the run (not its workers)
    done = len(st._committed(out/st.PARTS))
    for _ in range(100):                                     # its worker processes notice and exit
        try:
            os.killpg(p.pid, 0)
            time.sleep(.1)
        except ProcessLookupError: break
    else:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail('worker processes outlived their killed parent')
    assert 2 <= done < N_STACKS and json.loads((out/st.META).read_text())['complete'] is False
    with pytest.raises(InputError, match='extraction not finished'): ParticleStore.open(out)
    SEEN.clear()
    extract_store(plates, out, size=CROP, workers=1, progress=False, extractor=slow_extract)  # the same run, continued
    assert len(SEEN) == N_STACKS - done                     # only the stacks the killed run had not committed
    assert_same_store(out, ref.path)
    assert not (out/st.PARTS).exists() and not list(out.glob('.*.tmp*'))


def test_crash_during_consolidation(ref, plates, tmp_path, monkeypatch):
    calls, link = [], st._link
    def dying(src, dst):
        if len(calls) == 5: raise MemoryError('simulated crash')
        calls.append(1)
        return link(src, dst)
    monkeypatch.setattr(st, '_link', dying)
    with pytest.raises(MemoryError): extract_store(plates, tmp_path/'s', workers=1, **KW)
    with pytest.raises(InputError, match='extraction not finished'): ParticleStore.open(tmp_path/'s')
    monkeypatch.setattr(st, '_link', link)
    assert_same_store(extract_store(plates, tmp_path/'s', workers=1, **KW).path, ref.path)


@pytest.fixture(scope='module')
def bad_plates(plates, tmp_path_factory):
    "The plates with a truncated photo, a missing layer, a layer of another size, and an empty plate."
    import shutil
    bad = Path(shutil.copytree(plates, tmp_path_factory.mktemp('bad')/'p'))
    (bad/'s0001'/'layer2.png').write_bytes((bad/'s0001'/'layer2.png').read_bytes()[:300])
    (bad/'s0002'/'layer5.png').unlink()
    write_image(bad/'s0004'/'layer0.png', np.zeros((SIZE[1] // 2, SIZE[0], 3), np.uint8))
    rng = np.random.default_rng(0)
    for l in range(6):
        write_image(bad/'s9999'/f'layer{l}.png',
                    np.clip(rng.normal((50, 190, 60), 3, (SIZE[1], SIZE[0], 3)), 0, 255).astype(np.uint8))
    return bad


def test_bad_stacks_listed_and_skipped(ref, bad_plates, tmp_path):
    with pytest.warns(UserWarning, match='3 of 7 stacks skipped'):
        s = extract_store(bad_plates, tmp_path/'s', workers=2, **KW)
    e = pd.read_csv(s.path/st.ERRORS)
    assert list(e.columns) == ['stack_id', 'error'] and e.stack_id.tolist() == ['s0001', 's0002', 's0004']
    assert 'truncated' in e.error[0] and '5 layers found, 6 expected' in e.error[1]
    assert 'layer is 320×256 px but layer0.png is 320×128 px' in e.error[2]
    keep = ~ref.table.stack_id.isin(e.stack_id)
    expect = ref.table[keep].drop(columns='particle_id').reset_index(drop=True)
    pd.testing.assert_frame_equal(s.table.drop(columns='particle_id'), expect)   # the empty plate adds no rows
    np.testing.assert_array_equal(s.crops[:], ref.crops[:][keep.to_numpy()])
    assert 's9999' not in set(e.stack_id) and 's9999' not in set(s.table.stack_id)


def test_all_failed_raises(bad_plates, tmp_path):
    import shutil
    allbad = Path(shutil.copytree(bad_plates, tmp_path/'p'))
    for d in allbad.glob('s*'): (d/'layer0.png').write_bytes(b'')
    with pytest.raises(InputError, match='all 7 stacks failed, e.g. s0000: .*empty file'):
        extract_store(allbad, tmp_path/'s', workers=1, **KW)
    assert len(pd.read_csv(tmp_path/'s'/st.ERRORS)) == 7
    assert sorted(p.name for p in (tmp_path/'s').iterdir() if not p.name.startswith('.')) == ['errors.csv']
    # the folder can take a corrected run with other parameters
    with pytest.warns(UserWarning, match='6 of 7 stacks skipped'):
        s = extract_store(bad_plates, tmp_path/'s', workers=1, n_layers=5, **KW)
    assert len(s.errors) == 6 and 's0002' not in set(s.errors.stack_id)  # now the six-layer stacks are the wrong ones
    assert set(s.table.stack_id) == {'s0002'}


def test_bad_store_folders(ref, tmp_path):
    with pytest.raises(InputError, match='no such particle store folder'): ParticleStore.open(tmp_path/'none')
    (tmp_path/'half').mkdir()
    with pytest.raises(InputError, match='missing particles.parquet'): ParticleStore.open(tmp_path/'half')
    import shutil
    shutil.copytree(ref.path/st.CROPS, tmp_path/'half'/st.CROPS)
    ref.table.iloc[:2].to_parquet(tmp_path/'half'/st.TABLE)
    with pytest.raises(InputError, match=f'has 2 rows but crops.zarr holds {len(ref)} crops'):
        ParticleStore.open(tmp_path/'half')


def test_refusals(plates, tmp_path):
    (tmp_path/'busy').mkdir()
    (tmp_path/'busy'/'notes.txt').write_text('x')
    with pytest.raises(InputError, match='folder is not empty and holds no extraction run'):
        extract_store(plates, tmp_path/'busy', **KW)
    def strict(stack, size=280, background='saturation', pixel_size_um=None): return extract_particles(stack, size=size)
    with pytest.raises(InputError, match="strict: got an unexpected keyword argument 'n_segmnts'"):
        extract_store(plates, tmp_path/'kw', n_segmnts=10, extractor=strict, **KW)
    with pytest.raises(InputError, match='--workers 0'):
        extract_store(plates, tmp_path/'w', workers=0, **KW)
    import fcntl
    (tmp_path/'locked').mkdir()
    with open(tmp_path/'locked'/'.lock', 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(InputError, match='another extraction is writing this store'):
            extract_store(plates, tmp_path/'locked', **KW)


def test_artefacts(ref, tmp_path):
    import shutil
    s = ParticleStore.open(shutil.copytree(ref.path, tmp_path/'s'))
    s.write_array('latent.npy', np.ones((len(s), 4), np.float32))
    s.write_table('clusters.parquet', pd.DataFrame({'particle_id': s.table.particle_id, 'cluster': 0}))
    s.write_table('labels.csv', pd.DataFrame({'cluster': [0], 'name': ['quartz']}))
    assert s.read_array('latent.npy').shape == (len(s), 4)
    assert s.read_table('labels.csv').name.tolist() == ['quartz']
    assert not list(s.path.glob('.*.tmp*'))
    with pytest.raises(InputError, match='plain file name'): s.write_table('sub/x.csv', s.table)


def test_script_without_main_guard_is_one_clear_line(plates, tmp_path):
    "Workers of a script with no `if __name__ == '__main__':` die at start: one InputError, not a pool traceback."
    script = tmp_path/'noguard.py'
    script.write_text(textwrap.dedent(f"""
        from sediment_cluster.particles.store import extract_store
        extract_store({str(plates)!r}, {str(tmp_path/'s')!r}, size=16, workers=2, progress=False)
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and last.startswith('sediment_cluster.core.InputError: a worker process')
    assert "if __name__ == '__main__':" in last and 'workers=1' in last
