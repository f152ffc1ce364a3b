"Store integrity: every file recorded in the manifest at write time, damage named with its rebuild command, `--repair`."
import json, shutil, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sediment_cluster.core import InputError, write_image
from sediment_cluster.particles import store as st
from sediment_cluster.particles.store import ParticleStore, extract_store, verify_store
from test_store import KW, SIZE, assert_same_store, bad_plates, plates, ref  # noqa: F401 (fixtures)


@pytest.fixture
def copy(ref, tmp_path):
    "A copy of the reference store to damage."
    return Path(shutil.copytree(ref.path, tmp_path/'store'))


def chunk(path, i): return path/st.CROPS/f'c.{i}.0.0.0.0'


def repair(plates, path):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        s = extract_store(plates, path, workers=1, repair=True, **KW)
    return s, [str(x.message) for x in w]


def test_manifest_records_every_file(ref):
    m = json.loads((ref.path/st.MANIFEST).read_text())
    assert m['kind'] == 'extract' and set(m['files']) == set(st._CORE)
    for name, rec in m['files'].items():
        assert rec['size'] == (ref.path/name).stat().st_size and rec['sha256'] == st._sha256(ref.path/name)
    sums = np.load(ref.path/st.SUMS)
    assert sums.shape == (len(ref), 2) and (sums[:, 0] == [chunk(ref.path, i).stat().st_size
                                                          for i in range(len(ref))]).all()
    assert verify_store(ref.path) == [] and ref.verify() == []


@pytest.mark.parametrize('damage', ['truncate', 'delete', 'flip'])
def test_table_damage_named_and_repaired(ref, plates, copy, damage):
    p = copy/st.TABLE
    if damage == 'truncate': p.write_bytes(p.read_bytes()[:100])
    elif damage == 'delete': p.unlink()
    else: p.write_bytes(p.read_bytes()[:-9] + bytes(b ^ 1 for b in p.read_bytes()[-9:]))
    with pytest.raises(InputError) as e: ParticleStore.open(copy)
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith(str(p)) and '--repair' in msg and f'--out {copy}' in msg
    assert {'truncate': 'truncated', 'delete': 'missing', 'flip': 'SHA-256'}[damage] in msg
    with pytest.raises(InputError, match='particles.parquet'): extract_store(plates, copy, workers=1, **KW)
    s, said = repair(plates, copy)
    assert any('extracting again' in m for m in said)
    assert_same_store(s.path, ref.path) and s.verify() == []


@pytest.mark.parametrize('damage', ['truncate', 'delete', 'flip'])
def test_crop_chunk_damage(ref, plates, copy, damage):
    f = chunk(copy, 3)
    if damage == 'truncate': f.write_bytes(f.read_bytes()[:20])
    elif damage == 'delete': f.unlink()
    else: f.write_bytes(bytes([f.read_bytes()[0] ^ 255]) + f.read_bytes()[1:])
    s = ParticleStore.open(copy)                  # opening reads no chunk
    np.testing.assert_array_equal(s[2], ref[2])   # the others read as ever
    for read in (lambda: s[3], lambda: s.crop(3), lambda: s[:5], lambda: list(s.batches(4)),
                 lambda: s.crops.get_orthogonal_selection(([1, 3],))):
        with pytest.raises(InputError) as e: read()   # never zeros
        assert str(e.value).startswith(str(f)) and '--repair' in str(e.value) and '\n' not in str(e.value)
    assert [p.split(':')[0] for p in s.verify()] == [str(f)]
    s, _ = repair(plates, copy)
    assert_same_store(s.path, ref.path) and s.verify() == []


@pytest.mark.parametrize('damage', ['garbage', 'delete'])
@pytest.mark.parametrize('name', [st.MANIFEST, st.META, st.SUMS, st.ERRORS, 'crops.zarr/zarr.json'])
def test_other_core_files(ref, plates, copy, name, damage):
    if damage == 'garbage': (copy/name).write_bytes(b'{"garbage')
    else: (copy/name).unlink()
    with pytest.raises(InputError) as e: ParticleStore.open(copy)
    assert name.split('/')[-1] in str(e.value) and '--repair' in str(e.value)
    s, _ = repair(plates, copy)
    assert every_file(copy) == every_file(ref.path) and s.verify() == []


def test_repair_of_an_intact_store_does_nothing(ref, plates, copy):
    before = {p: p.stat().st_mtime_ns for p in copy.rglob('*') if p.is_file()}
    s, said = repair(plates, copy)
    assert said == [] and before == {p: p.stat().st_mtime_ns for p in copy.rglob('*') if p.is_file()}


def test_repair_keeps_derived_files_fresh(ref, plates, copy):
    s = ParticleStore.open(copy)
    s.write_array('latent.npy', np.ones((len(s), 3), np.float32), sources=[st.SUMS],
                  rebuild=f'sediment-cluster encode {copy} --model m.pt')
    chunk(copy, 0).unlink()
    s, _ = repair(plates, copy)
    assert s.stale('latent.npy') == []    # the same photos give the same crops: the features still hold


def test_derived_files_checked_and_stale(copy):
    s = ParticleStore.open(copy)
    cmd = f'sediment-cluster encode {copy} --model m.pt'
    s.write_array('latent.npy', np.ones((len(s), 3), np.float32), sources=[st.SUMS], rebuild=cmd)
    s.write_table('clusters.parquet', pd.DataFrame({'particle_id': range(len(s)), 'cluster': 0}),
                  sources=['latent.npy'], rebuild=f'sediment-cluster cluster {copy}')
    assert s.stale('clusters.parquet') == [] and s.read_array('latent.npy').shape == (len(s), 3)
    p = copy/'latent.npy'
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(InputError, match=f'latent.npy: truncated .* rebuild it with `{cmd}`'):
        s.read_array('latent.npy')
    p.unlink()
    with pytest.raises(InputError, match='latent.npy: missing'): s.read_array('latent.npy')
    assert [x.split(':')[0] for x in s.verify()] == [str(p)]
    s.write_array('latent.npy', np.zeros((len(s), 3), np.float32), sources=[st.SUMS], rebuild=cmd)  # re-encoded
    assert s.stale('clusters.parquet') == ['latent.npy']
    with pytest.raises(InputError, match='clusters.parquet: computed from an earlier latent.npy; rebuild it with '
                                         '`sediment-cluster cluster'):
        s.check_fresh('clusters.parquet')
    (copy/'x.csv').write_text('a\n1\n')   # files the store did not write are read as they are
    assert s.read_table('x.csv').a.tolist() == [1]


def test_unreadable_artefact_is_one_line(copy):
    s = ParticleStore.open(copy)
    (copy/'umap.npy').write_bytes(b'\x93NUMPY garbage')
    with pytest.raises(InputError, match='umap.npy: not readable'): s.read_array('umap.npy')


def test_damaged_part_on_resume(ref, plates, tmp_path, monkeypatch):
    "A part file damaged between a killed run and its resume is named, and its stack extracted again."
    calls, commit = [], st._commit
    def dying(parts, sid, *a):
        if len(calls) == 3: raise KeyboardInterrupt
        calls.append(sid)
        return commit(parts, sid, *a)
    monkeypatch.setattr(st, '_commit', dying)
    with pytest.raises(KeyboardInterrupt): extract_store(plates, tmp_path/'s', workers=1, **KW)
    monkeypatch.setattr(st, '_commit', commit)
    parts = tmp_path/'s'/st.PARTS
    (parts/'s0000.parquet').write_bytes(b'PAR1 nothing')
    (parts/'s0001.chunks'/'0').unlink()
    with pytest.warns(UserWarning) as w: s = extract_store(plates, tmp_path/'s', workers=1, **KW)
    said = ' '.join(str(x.message) for x in w)
    assert 's0000.parquet: not a readable table' in said and 's0001.chunks/0: missing' in said
    assert_same_store(s.path, ref.path)


def test_report_during_running_extract(copy):
    import fcntl
    meta = json.loads((copy/st.META).read_text())
    (copy/st.META).write_text(json.dumps({**meta, 'complete': False}))
    with pytest.raises(InputError, match='extraction not finished; run the same extract command again'):
        ParticleStore.open(copy)
    with open(copy/'.lock', 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(InputError, match='extraction still running'): ParticleStore.open(copy)


def test_store_lock(copy):
    s = ParticleStore.open(copy)
    with s.locked('cluster run'):
        with pytest.raises(InputError, match='another cluster run is writing this store'):
            with s.locked('cluster run'): pass
    with s.locked('cluster run'): pass   # released


def test_created_store_checked(tmp_path):
    crops = np.zeros((3, 2, 8, 8, 3), np.uint8)   # all-zero crops are files too
    s = ParticleStore.create(tmp_path/'c', pd.DataFrame({'stack_id': list('abc')}), crops)
    assert s.verify() == [] and s[1].sum() == 0
    chunk(s.path, 1).unlink()
    with pytest.raises(InputError, match='crop chunk missing'): s[1]
    with pytest.raises(InputError, match='write the store again'): s[1]


def test_older_store_without_manifest(copy):
    (copy/st.MANIFEST).unlink()
    (copy/st.SUMS).unlink()
    s = ParticleStore.open(copy)
    assert len(s.verify()) == 1 and 'manifest.json: missing' in s.verify()[0]
    chunk(copy, 0).unlink()
    with pytest.raises(InputError, match='crop chunk missing'): s[0]
    (copy/st.TABLE).write_bytes(b'PAR1')
    with pytest.raises(InputError, match='particles.parquet: not a readable parquet table'): ParticleStore.open(copy)


def test_no_particles(tmp_path):
    rng = np.random.default_rng(0)
    for s in ('a', 'b'):
        for l in range(3):
            write_image(tmp_path/'p'/s/f'layer{l}.png',
                        np.clip(rng.normal((50, 190, 60), 3, (SIZE[1], SIZE[0], 3)), 0, 255).astype(np.uint8))
    with pytest.warns(UserWarning, match='no particles found on the 2 stacks read'):
        s = extract_store(tmp_path/'p', tmp_path/'s', workers=1, **KW)
    assert len(s) == 0 and s.verify() == [] and s.meta['n_particles'] == 0


def test_stray_file_left_out_by_name(ref, plates, tmp_path):
    p = Path(shutil.copytree(plates, tmp_path/'p'))
    write_image(p/'s0003'/'notes.png', np.zeros((20, 20, 3), np.uint8))
    with pytest.warns(UserWarning, match=r"1 stray file\(s\) left out .*s0003/notes.png"):
        s = extract_store(p, tmp_path/'s', workers=1, **KW)
    assert len(s.errors) == 0 and s.meta['params']['n_layers'] == 6
    assert s.meta['stray_files'] == [str(p/'s0003'/'notes.png')]
    pd.testing.assert_frame_equal(s.table, ref.table)


def test_tied_layer_counts_refused(plates, tmp_path):
    p = tmp_path/'p'
    for sid in ('s0000', 's0001'): shutil.copytree(plates/sid, p/sid)
    shutil.copy(p/'s0000'/'layer5.png', p/'s0000'/'layer6.png')   # a stray file named like a layer
    with pytest.raises(InputError, match=r"as many stacks have 7 as 6 layers \(e.g. 's0000': 7, 's0001': 6\); give "
                                         r"the layer count \(--layers N\)"):
        extract_store(p, tmp_path/'s', **KW)
    s = extract_store(p, tmp_path/'s', n_layers=6, workers=1, **KW)
    assert s.errors.stack_id.tolist() == ['s0000'] and '7 layers found, 6 expected' in s.errors.error[0]


def every_file(path, names=(st.TABLE, st.ERRORS, st.SUMS, st.META, st.MANIFEST)):
    "Every byte of the store's files (the crop chunks included), by relative path."
    files = [path/n for n in names] + sorted((path/st.CROPS).rglob('*'))
    return {str(f.relative_to(path)): f.read_bytes() for f in files if f.is_file()}


def spy_on_stacks(monkeypatch, stop_after=None):
    "Record the stack ids `extract_store` extracts (serial runs); Ctrl-C once `stop_after` are done."
    seen, one = [], st._extract_one
    def spy(fn, stack_id, *a):
        if stop_after is not None and len(seen) == stop_after: raise KeyboardInterrupt
        seen.append(stack_id)
        return one(fn, stack_id, *a)
    monkeypatch.setattr(st, '_extract_one', spy)
    return seen


def test_repair_extracts_only_the_damaged_stacks(ref, plates, copy, monkeypatch):
    "Damaged crop chunks of two stacks: those two are extracted again, every other chunk file is kept as it was."
    t = ref.table
    hit = [t.stack_id.iat[3], t.stack_id.iat[-1]]
    chunk(copy, 3).unlink()
    last = chunk(copy, len(t) - 1)
    last.write_bytes(last.read_bytes()[:-5])
    others = {i: chunk(copy, i).stat().st_ino for i in np.flatnonzero(~t.stack_id.isin(hit))}
    seen = spy_on_stacks(monkeypatch)
    s, said = repair(plates, copy)
    assert seen == sorted(set(hit)) and f'extracting again 2 of {len(t.stack_id.unique())} stacks' in ' '.join(said)
    assert every_file(copy) == every_file(ref.path) and s.verify() == []
    assert {i: chunk(copy, i).stat().st_ino for i in others} == others   # linked back, not rewritten


def test_repair_killed_then_resumed(ref, plates, copy, monkeypatch):
    "A repair killed while it extracts leaves an interrupted run: the plain extract command completes it."
    chunk(copy, 0).unlink()
    spy_on_stacks(monkeypatch, stop_after=0)
    with pytest.raises(KeyboardInterrupt): repair(plates, copy)
    with pytest.raises(InputError, match='extraction not finished; run the same extract command again'):
        ParticleStore.open(copy)
    monkeypatch.undo()
    seen = spy_on_stacks(monkeypatch)
    s = extract_store(plates, copy, workers=1, **KW)
    assert seen == [ref.table.stack_id.iat[0]] and every_file(copy) == every_file(ref.path) and s.verify() == []


def test_damaged_errors_file_reruns_only_stacks_without_rows(ref, bad_plates, tmp_path, monkeypatch):
    "errors.csv lost: only the stacks that have no rows in the table (failed or empty) are extracted again."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        s = extract_store(bad_plates, tmp_path/'s', workers=1, **KW)
        before = every_file(s.path)
        (s.path/st.ERRORS).unlink()
        seen = spy_on_stacks(monkeypatch)
        s = extract_store(bad_plates, tmp_path/'s', workers=1, repair=True, **KW)
    stacks = sorted(p.name for p in bad_plates.iterdir() if p.is_dir())
    assert seen == [x for x in stacks if x not in set(s.table.stack_id)] and len(seen) >= len(s.errors) > 0
    assert every_file(s.path) == before


def test_check_names_the_rebuild_of_derived_files(copy):
    s = ParticleStore.open(copy)
    cmd = f'sediment-cluster encode {copy} --model m.pt'
    s.write_array('latent.npy', np.ones((len(s), 3), np.float32), sources=[st.SUMS], rebuild=cmd)
    (copy/'latent.npy').unlink()
    assert s.verify() == [f"{copy/'latent.npy'}: missing (deleted?); rebuild it with `{cmd}`"]


def test_damaged_chunk_in_a_batch_is_one_clean_error(ref, copy):
    "A damaged chunk among many read at once raises before zarr reads any (no reads left pending), then reads again."
    chunk(copy, 5).write_bytes(b'\x28\xb5\x2f\xfd junk')
    s = ParticleStore.open(copy)
    mask = np.zeros(s.crops.shape, bool)
    mask[5, 0, 0, 0, 0] = True
    for read in (lambda: s[:], lambda: s.crops.oindex[[2, 5]], lambda: s.crops.vindex[[1, 5], 0, 0, 0, 0],
                 lambda: s.crops.vindex[mask], lambda: s.crops.blocks[5], lambda: s.crops[..., 0]):
        with pytest.raises(InputError, match='c.5.0.0.0.0: crop chunk truncated'): read()
        assert s.crops.store.ready == {}    # nothing read ahead is left behind
    np.testing.assert_array_equal(s.crops.vindex[[1, 7], 0, 0, 0, 0], ref.crops.vindex[[1, 7], 0, 0, 0, 0])
    np.testing.assert_array_equal(s[6:9], ref[6:9])
    np.testing.assert_array_equal(s[[1, 7], 0], ref[[1, 7], 0])
    with pytest.raises(IndexError): s[len(s)]


def test_twelve_bit_plates_noted_and_same_particles(ref, plates, tmp_path):
    "The plates saved as 12-bit data in 16-bit PNGs: the same particles, and extract.json says 12-bit."
    import cv2
    from sediment_cluster.core import read_image
    for f in sorted(plates.rglob('*.png')):
        out = tmp_path/'p12'/f.relative_to(plates)
        out.parent.mkdir(parents=True, exist_ok=True)
        twelve = np.round(read_image(f)[..., ::-1].astype(np.float64) * 4095 / 255).astype(np.uint16)
        cv2.imwrite(str(out), twelve)
    s = extract_store(tmp_path/'p12', tmp_path/'s', workers=1, **KW)
    n = len([d for d in plates.iterdir() if d.is_dir()])
    assert s.meta['bit_depth'] == {'12': n} and ref.meta['bit_depth'] == {'8': n}
    pd.testing.assert_frame_equal(s.table, ref.table)


def test_rebuild_command_follows_a_moved_store(copy, tmp_path):
    "The command recorded with a derived file names the store where it is now, not where it was written."
    s = ParticleStore.open(copy)
    s.write_array('features_x.npy', np.ones((len(s), 2), np.float32), sources=[st.SUMS],
                  rebuild=f'sediment-cluster encode {copy} --features x')
    moved = Path(shutil.move(copy, tmp_path/'moved'))
    (moved/'features_x.npy').unlink()
    assert verify_store(moved) == [f"{moved/'features_x.npy'}: missing (deleted?); rebuild it with "
                                   f"`sediment-cluster encode {moved} --features x`"]


def test_read_json_checked(copy):
    s = ParticleStore.open(copy)
    (copy/'latent.json').write_text('{"latent": 3}')
    s.record('latent.json', rebuild=f'sediment-cluster encode {copy} --model m.pt')
    assert s.read_json('latent.json') == {'latent': 3}
    (copy/'latent.json').write_text('{"lat')
    with pytest.raises(InputError, match=r"latent.json: truncated or changed .*; rebuild it with `sediment-cl"):
        s.read_json('latent.json')
    (copy/'other.json').write_text('{"a": ')   # not recorded: read as it is, a failure still one line
    with pytest.raises(InputError, match=r'other.json: not readable \(JSONDecodeError'): s.read_json('other.json')
