"The `sediment-cluster` command end to end, as a user runs it (a real subprocess)."
import argparse, inspect, subprocess, sys, shutil
from pathlib import Path
import pytest
from sediment_cluster import cli
from sediment_cluster.cli import make_parser
from sediment_cluster.core import find_stacks, read_image

EXE = shutil.which('sediment-cluster', path=str(Path(sys.executable).parent))

def run(*args, cwd=None):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)

def ok(*args, cwd=None):
    "Run a command that must succeed; its result."
    r = run(*args, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r

def commands(): return sorted(make_parser(None)._subparsers._group_actions[0].choices)

def test_console_script_installed(): assert EXE, 'sediment-cluster is not on the venv PATH: pip install -e .'

@pytest.mark.parametrize('cmd', commands())
def test_every_command_has_help(cmd):
    r = run(cmd, '--help')
    assert r.returncode == 0 and 'usage: sediment-cluster' in r.stdout

def test_no_command_prints_help_and_fails():
    r = run()
    assert r.returncode == 2 and 'commands' in r.stdout

def test_demo_writes_what_it_prints(tmp_path):
    r = run('demo', '--out', tmp_path/'demo', '--stacks', '2')
    assert r.returncode == 0, r.stderr
    written = [Path(l.removeprefix('wrote ')) for l in r.stdout.splitlines() if l.startswith('wrote ')]
    assert written and all(p.exists() for p in written)
    assert len(find_stacks(tmp_path/'demo'/'plates')) == 2
    assert read_image(tmp_path/'demo'/'stack.png').shape[2] == 3
    import json, numpy as np
    from sediment_cluster.particles.store import ParticleStore
    store = ParticleStore(tmp_path/'demo'/'store')
    assert len(store) > 0 and np.load(store.path/'latent.npy').shape[0] == len(store)
    assert 'data:image/png;base64' in (tmp_path/'demo'/'report.html').read_text()
    import pandas as pd
    t = pd.read_csv(tmp_path/'demo'/'feature_comparison.csv')
    assert {'vae', 'contrastive', 'handcrafted', 'colour + shape'} <= set(t.features) and t.purity.between(0, 1).all()
    m = json.loads((tmp_path/'demo'/'cube_metrics.json').read_text())
    assert m['n_pred'] == m['n_ref'] == 3 and m['f1']['weighted'] > .95, m  # the demo cube is easy: 3 pigments

def test_synth_plates_round_trip(tmp_path):
    ok('synth-plates', tmp_path/'p', '--stacks', '3', '--layers', '4', '--width', '320', '--height', '256',
       '--seed', '5')
    stacks = find_stacks(tmp_path/'p')
    assert len(stacks) == 3 and all(len(v) == 4 for v in stacks.values())

@pytest.mark.parametrize('args,needle', [
    (['synth-plates', '{tmp}/p', '--stacks', '0'], 'stacks'),
    (['synth-plates', '{tmp}/p', '--plate', 'mauve-ish'], 'mauve-ish'),
])
def test_bad_input_is_one_line(tmp_path, args, needle):
    r = run(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and 'Traceback' not in r.stderr

def test_synth_cube_xrf_writes_cube_and_labels(tmp_path):
    import numpy as np
    from sediment_cluster.cubes.datacube import read_cube
    r = run('synth-cube', '--kind', 'xrf', '--out', tmp_path/'c.h5', '--size', '24', '--channels', '256')
    assert r.returncode == 0, r.stderr
    cube, labels = read_cube(tmp_path/'c.h5'), np.load(tmp_path/'c_labels.npy')
    assert cube.n_channels == 256 and cube.shape[:2] == labels.shape
    assert labels.ndim == 2 and labels.max() >= 1

def test_synth_cube_missing_rgb_is_one_line(tmp_path):
    r = run('synth-cube', '--kind', 'xrf', '--out', tmp_path/'c.h5', '--rgb', tmp_path/'nope.png')
    assert r.returncode == 2 and 'nope.png' in r.stderr and len(r.stderr.strip().splitlines()) == 1

def test_rgb_cluster_then_evaluate_recovers_blocks(tmp_path):
    import json, numpy as np
    from sediment_cluster.core import write_image
    truth = np.repeat(np.arange(3), 8)[None].repeat(12, 0)           # three vertical bands
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
    write_image(tmp_path/'img.png', colours[truth])
    np.save(tmp_path/'truth.npy', truth)
    r = run('rgb-cluster', tmp_path/'img.png', '--out', tmp_path/'ref.npy', '--k-max', '4')
    assert r.returncode == 0, r.stderr
    r = run('evaluate', tmp_path/'ref.npy', '--reference', tmp_path/'truth.npy', '--out', tmp_path/'m.json')
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/'m.json').read_text())
    assert set(m) == {'n_pred', 'n_ref', 'matching', 'accuracy', 'precision', 'recall', 'f1', 'tversky', 'ari', 'nmi',
                      'confusion'}
    assert m['n_pred'] == 3 and m['f1']['weighted'] == 1.0 and m['ari'] == 1.0

def test_evaluate_rejects_shape_mismatch(tmp_path):
    import numpy as np
    np.save(tmp_path/'a.npy', np.zeros((4, 4), int))
    np.save(tmp_path/'b.npy', np.zeros((4, 5), int))
    r = run('evaluate', tmp_path/'a.npy', '--reference', tmp_path/'b.npy', '--out', tmp_path/'m.json')
    assert r.returncode == 2 and 'differs' in r.stderr and not (tmp_path/'m.json').exists()

def test_extract_store_from_synthetic_plates(tmp_path):
    import pandas as pd
    from sediment_cluster.particles.store import ParticleStore
    r = run('synth-plates', tmp_path/'p', '--stacks', '2', '--width', '320', '--height', '256', '--seed', '3')
    assert r.returncode == 0, r.stderr
    r = run('extract', tmp_path/'p', '--out', tmp_path/'s', '--size', '32', '--workers', '1', '--pixel-size-um', '2.5')
    assert r.returncode == 0, r.stderr
    store, truth = ParticleStore(tmp_path/'s'), pd.read_parquet(tmp_path/'p'/'truth.parquet')
    assert store.crops.shape[1:] == (6, 32, 32, 3) and 'eq_diameter_um' in store.table
    assert abs(len(store) - len(truth)) <= max(2, len(truth) // 5)   # about one particle per grain (clumps merge)
    ok('extract', tmp_path/'p', '--out', tmp_path/'s', '--size', '32', '--workers', '1', '--pixel-size-um', '2.5')
    assert len(ParticleStore(tmp_path/'s')) == len(store)  # a rerun finds the finished store

def test_extract_missing_folder_is_one_line(tmp_path):
    r = run('extract', tmp_path/'nope', '--out', tmp_path/'s')
    assert r.returncode == 2 and 'nope' in r.stderr and len(r.stderr.strip().splitlines()) == 1

def test_bench_extract_prints_ratio_and_writes_json(tmp_path):
    import json
    r = run('bench', 'extract', '--n-stacks', '1', '--size', '320', '256', '--methods', 'fast', 'reference',
            '--out', tmp_path/'b.json')
    assert r.returncode == 0, r.stderr
    b = json.loads((tmp_path/'b.json').read_text())
    assert b['speedup'] > 1 and set(b['methods']) == {'fast', 'reference'}
    assert 'faster than reference' in r.stdout
    assert r.stdout.startswith('versions: python 3.') and 'numpy ' in r.stdout  # figures traceable to an install

def test_bench_cross_writes_one_record_per_cube(tmp_path):
    import json
    r = run('bench', 'cross', '--photos', 'rocket', 'retina', '--seeds', '1', '--size', '16', '--channels', '64',
            '--out', tmp_path/'x.json')
    assert r.returncode == 0, r.stderr
    text = (tmp_path/'x.json').read_text()
    rows = json.loads(text)
    assert [x['cube'] for x in rows] == ['rocket', 'retina'] and all(0 <= x['f1_others'] <= 1 for x in rows)
    assert 'NaN' not in text and all(x['gap_sd'] is None for x in rows)       # one seed: no spread, strict JSON
    assert 'mean over the cubes: gap' in r.stdout

def _toy_store(path, n=40, seed=0):
    "A store of `n` crops in two colour groups with a 2-D latent that separates them."
    import numpy as np, pandas as pd
    from sediment_cluster.particles.store import ParticleStore
    rng = np.random.default_rng(seed)
    grp = np.arange(n) % 2
    crops = np.zeros((n, 2, 16, 16, 3), np.uint8)
    crops[grp == 0, ..., 0] = 200
    crops[grp == 1, ..., 2] = 200
    table = pd.DataFrame({'stack_id': [f's{i // 4}' for i in range(n)], 'x0': 0, 'y0': 0, 'x1': 16, 'y1': 16,
                          'chopped': False, 'clumped': False, 'area_px': 200., 'eq_diameter_px': 16.,
                          'aspect_ratio': 1., 'circularity': .9, 'solidity': .95})
    s = ParticleStore.create(path, table, crops)
    s.write_array('latent.npy', (grp[:, None] * 10 + rng.normal(size=(n, 2))).astype('float32'))
    return s, grp

def test_cluster_report_and_ecotaxa(tmp_path):
    import pandas as pd
    from sediment_cluster.metrics import ari
    s, grp = _toy_store(tmp_path/'s')
    r = run('cluster', s.path, '--k', '2')
    assert r.returncode == 0, r.stderr
    cl = pd.read_parquet(s.path/'clusters.parquet')
    assert list(cl.columns[:3]) == ['particle_id', 'cluster', 'distance'] and ari(cl.cluster.to_numpy(), grp) == 1.0
    names = {c: 'red' if grp[cl.cluster == c][0] == 0 else 'blue' for c in sorted(cl.cluster.unique())}
    (s.path/'labels.csv').write_text('cluster,class\n' + '\n'.join(f"{c},{v}" for c, v in names.items()))
    r = run('report', s.path, '--out', tmp_path/'r.html', '--view', 'pca')
    assert r.returncode == 0, r.stderr
    html = (tmp_path/'r.html').read_text()
    assert html.startswith('<!') and 'data:image/png;base64' in html and 'red' in html
    r = run('export-ecotaxa', s.path, '--out', tmp_path/'eco')
    assert r.returncode == 0, r.stderr
    assert any(p.suffix == '.zip' for p in (tmp_path/'eco').iterdir())

def test_ecotaxa_validate_then_import_gives_the_same_labels(tmp_path):
    import io, zipfile
    import pandas as pd
    from sediment_cluster.particles.label import Labeller
    s, grp = _toy_store(tmp_path/'s')
    ok('cluster', s.path, '--k', '2')
    lab = Labeller(s.path)
    for c in sorted(lab.clusters.cluster.unique()): lab.name(c, 'red' if grp[lab.members(c)][0] == 0 else 'blue')
    ok('export-ecotaxa', s.path, '--out', tmp_path/'eco')
    archive = next((tmp_path/'eco').glob('*.zip'))
    r = ok('validate-ecotaxa', archive)
    assert archive.name in r.stdout
    with zipfile.ZipFile(archive) as z:
        tsv = next(n for n in z.namelist() if n.endswith('.tsv'))
        df = pd.read_csv(io.BytesIO(z.read(tsv)), sep='\t', dtype=str)
    df['object_annotation_status'] = ['[t]'] + ['validated'] * (len(df) - 1)
    df.to_csv(tmp_path/'ecotaxa_back.tsv', sep='\t', index=False)
    r = ok('import-ecotaxa', s.path, tmp_path/'ecotaxa_back.tsv', '--labels', 'expert.csv')
    assert 'expert.csv' in r.stdout
    before = lab.labels_per_particle().set_index('particle_id')['class']
    after = Labeller(s.path, 'expert.csv').labels_per_particle().set_index('particle_id')['class']
    assert (before == after.reindex(before.index)).all()

def test_validate_ecotaxa_broken_archive_lists_each_rule(tmp_path):
    (tmp_path/'Ecotaxa_Bad.tsv').write_text('object_id\tweird\n[t]\t[t]\na\tb\n')
    r = run('validate-ecotaxa', tmp_path/'Ecotaxa_Bad.tsv')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) >= 3, r.stderr

def test_extract_summary_check_and_repair(tmp_path):
    ok('synth-plates', tmp_path/'p', '--stacks', '3', '--width', '320', '--height', '256')
    bad = sorted(sorted((tmp_path/'p').iterdir())[0].glob('*.png'))[0]
    bad.write_bytes(bad.read_bytes()[:100])                                 # one stack cannot be read
    r = ok('extract', tmp_path/'p', '--out', tmp_path/'s', '--size', '32', '--workers', '1')
    assert 'from 2 of 3 stacks; 1 skipped' in r.stdout
    assert 'every file intact' in ok('check', tmp_path/'s').stdout
    next((tmp_path/'s'/'crops.zarr').glob('c.0.*')).unlink()               # a crop chunk deleted
    r = run('check', tmp_path/'s')
    assert r.returncode == 2 and 'crop chunk missing' in r.stderr
    r = ok('extract', tmp_path/'p', '--out', tmp_path/'s', '--size', '32', '--workers', '1', '--repair')
    assert 'extracting again 1 of 3 stacks' in r.stderr                     # only the stack of that chunk
    assert 'every file intact' in ok('check', tmp_path/'s').stdout

def test_pattern_help_says_whole_file_name():
    h = ' '.join(make_parser('extract')._subparsers._group_actions[0].choices['extract'].format_help().split())
    assert '--pattern PATTERN flat folder: regex with groups stack and layer, matching the whole file name' in h

def _errors_and_warnings(stderr:str) -> list:
    "The lines of `stderr` that are not progress bars."
    return [l for l in stderr.splitlines() if l.strip() and '%|' not in l]

def test_damaged_chunk_read_by_many_commands_is_one_line(tmp_path):
    s, _ = _toy_store(tmp_path/'s', n=40)
    ok('cluster', s.path, '--k', '2')
    c = s.path/'crops.zarr'/'c.5.0.0.0.0'
    c.write_bytes(c.read_bytes()[:-3])
    for args in (['encode', s.path, '--features', 'handcrafted'], ['report', s.path, '--out', tmp_path/'r.html'],
                 ['export-ecotaxa', s.path, '--out', tmp_path/'eco']):
        r = run(*args)
        assert r.returncode == 2 and _errors_and_warnings(r.stderr) == [r.stderr.strip().splitlines()[-1]], r.stderr
        assert f'{c}: crop chunk truncated' in r.stderr and '--repair' not in r.stderr   # made by create: no extract

def test_empty_store_warns_then_one_line(tmp_path):
    import numpy as np
    from sediment_cluster.core import write_image
    rng = np.random.default_rng(0)
    for st in 'ab':
        for l in range(3):
            write_image(tmp_path/'p'/st/f'layer{l}.png',
                        np.clip(rng.normal((50, 190, 60), 3, (128, 160, 3)), 0, 255).astype(np.uint8))
    r = ok('extract', tmp_path/'p', '--out', tmp_path/'s', '--size', '32', '--workers', '1')
    assert '0 particles from 2 stacks' in r.stdout
    assert _errors_and_warnings(r.stderr) == ['sediment-cluster extract: warning: ' + str(tmp_path/'s') + ': no '
        'particles found on the 2 stacks read; check the photos and the plate model (--background; `threshold=` from '
        'Python): the store is empty, encode and cluster will refuse it']
    for cmd in ('encode', 'cluster'):
        r = run(cmd, tmp_path/'s')
        assert r.returncode == 2 and _errors_and_warnings(r.stderr) == [r.stderr.strip()] and 'no particles' in r.stderr

def test_damaged_tiff_is_one_line_without_opencv_log(tmp_path):
    import numpy as np
    from sediment_cluster.core import write_image
    for l in range(2):
        write_image(tmp_path/'p'/'a'/f'layer{l}.png', np.full((64, 80, 3), (50, 190, 60), np.uint8))
        (tmp_path/'p'/'b').mkdir(parents=True, exist_ok=True)
        (tmp_path/'p'/'b'/f'layer{l}.png').write_bytes(b'II*\x00' + bytes(range(256)) * 4)
    r = run('extract', tmp_path/'p', '--out', tmp_path/'s', '--size', '32', '--workers', '1')
    assert 'ERROR' not in r.stderr and 'TIFF' not in r.stderr, r.stderr

def test_cluster_k_above_particles_is_one_line(tmp_path):
    s, _ = _toy_store(tmp_path/'s', n=6)
    r = run('cluster', s.path, '--k', '100')
    last = r.stderr.strip().splitlines()[-1]   # after the progress bar, one line names the problem
    assert r.returncode == 2 and last.startswith('sediment-cluster cluster: error') and '100' in last
    assert 'Traceback' not in r.stderr

def test_two_cluster_processes_at_once(tmp_path):
    "A second `cluster` on a store another process is clustering is refused in one line; the first result stands."
    import pandas as pd
    s, grp = _toy_store(tmp_path/'s')
    hold = (f"import time\nfrom sediment_cluster.particles.store import ParticleStore\n"
            f"with ParticleStore({str(s.path)!r}).locked('cluster run'):\n"
            f"    print('held', flush=True)\n    time.sleep(60)")
    holder = subprocess.Popen([sys.executable, '-c', hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        r = run('cluster', s.path, '--k', '2')
    finally:
        holder.kill()
        holder.wait()
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and 'another cluster run is writing this store' in last and 'Traceback' not in r.stderr
    assert not (s.path/'clusters.parquet').exists()
    both = [subprocess.Popen([EXE, 'cluster', str(s.path), '--k', '2'], stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    codes = [(p.wait(timeout=600), p.stderr.read()) for p in both]
    assert sorted(c for c, _ in codes)[0] == 0 and all(c in (0, 2) for c, _ in codes), codes
    assert all('another cluster run' in e for c, e in codes if c == 2) and not any('Traceback' in e for _, e in codes)
    from sediment_cluster.metrics import ari
    assert ari(pd.read_parquet(s.path/'clusters.parquet').cluster.to_numpy(), grp) == 1.0

def test_train_vae_then_encode(tmp_path):
    import numpy as np
    s, _ = _toy_store(tmp_path/'s', n=24)
    r = run('train-vae', s.path, '--out', tmp_path/'vae.pt', '--epochs', '1', '--size', '32', '--latent', '8',
            '--batch-size', '8')
    assert r.returncode == 0, r.stderr
    r = run('encode', s.path, '--model', tmp_path/'vae.pt')
    assert r.returncode == 0, r.stderr
    mu = np.load(s.path/'latent.npy')
    assert mu.shape == (24, 8) and mu.dtype == np.float32 and np.isfinite(mu).all()

def test_train_vae_missing_pretrained_file_is_one_line(tmp_path):
    s, _ = _toy_store(tmp_path/'s', n=8)
    r = run('train-vae', s.path, '--out', tmp_path/'vae.pt', '--pretrained', tmp_path/'nope.pth')
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and 'nope.pth' in last and 'Traceback' not in r.stderr
    assert not (tmp_path/'vae.pt').exists()

def test_train_spectral_segment_evaluate(tmp_path):
    import json, numpy as np
    ok('synth-cube', '--kind', 'xrf', '--out', tmp_path/'c.h5', '--size', '24', '--channels', '128')
    r = run('train-spectral', tmp_path/'c.h5', '--out', tmp_path/'m.pt', '--epochs', '5', '--k-max', '6')
    assert r.returncode == 0, r.stderr
    r = run('segment', tmp_path/'c.h5', '--model', tmp_path/'m.pt', '--out', tmp_path/'seg.npy', '--k-range', '2', '6')
    assert r.returncode == 0, r.stderr
    seg, ref = np.load(tmp_path/'seg.npy'), np.load(tmp_path/'c_labels.npy')
    assert seg.shape == ref.shape and 2 <= len(np.unique(seg)) <= 6
    r = run('evaluate', tmp_path/'seg.npy', '--reference', tmp_path/'c_labels.npy', '--out', tmp_path/'m.json')
    assert r.returncode == 0 and 0 <= json.loads((tmp_path/'m.json').read_text())['f1']['weighted'] <= 1
    r = run('segment', tmp_path/'c.h5', '--model', tmp_path/'m.pt', '--out', tmp_path/'el.npy', '--k-range', '2', '6',
            '--k-criterion', 'elbow', '--refine', 'manifold', '--fit-size', '300')
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path/'el.json').read_text())
    assert info['info']['k_criterion'] == 'elbow' and 2 <= info['k'] <= 6
    assert np.load(tmp_path/'el.npy').shape == ref.shape

def test_segment_bad_k_range_is_one_line(tmp_path):
    ok('synth-cube', '--kind', 'xrf', '--out', tmp_path/'c.h5', '--size', '16', '--channels', '64')
    ok('train-spectral', tmp_path/'c.h5', '--out', tmp_path/'m.pt', '--epochs', '2', '--k-max', '4')
    r = run('segment', tmp_path/'c.h5', '--model', tmp_path/'m.pt', '--out', tmp_path/'seg.npy', '--k-range', '5', '2')
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and 'Traceback' not in r.stderr and last.startswith('sediment-cluster segment: error')
    assert not (tmp_path/'seg.npy').exists()


# ---- the options are the functions' parameters: defaults and help cannot drift

def command_parsers() -> dict:
    "command (`bench cube` for a sub-command) → its parser, for every parser that calls a function."
    found = {}
    def walk(p, name):
        if p.get_default('_fn') is not None: found[name] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for n, sub in a.choices.items(): walk(sub, f'{name} {n}'.strip())
    walk(make_parser('all'), '')
    return found

@pytest.fixture(scope='module')
def parsers(): return command_parsers()

def test_every_command_calls_its_function(parsers):
    assert set(parsers) == set(cli._TARGETS)
    for cmd, p in parsers.items(): assert p.get_default('_fn') is cli.target(cmd), cmd

def _shown_default(action, default) -> str:
    "How `--help` shows `default` for `action` (one item of a tuple for a flag per item)."
    if hasattr(action, 'index'): default = default[action.index]
    return ' '.join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)

@pytest.mark.parametrize('cmd', sorted(cli._TARGETS))
def test_help_defaults_are_the_function_defaults(parsers, cmd):
    p = parsers[cmd]
    sig = inspect.signature(cli.target(cmd)).parameters
    shown = [a for a in p._actions if a.dest in sig]
    assert shown and {a.dest for a in shown} == set(p.get_default('_params'))
    text = ' '.join(p.format_help().split())
    for a in shown:
        default = sig[a.dest].default
        if default is inspect.Parameter.empty:
            assert a.required or not a.option_strings, (cmd, a.dest)   # given by the user
            continue
        assert a.default == default, (cmd, a.dest, a.default, default)
        if default is not None and default is not False:
            assert f"(default {_shown_default(a, default)})" in text, (cmd, a.dest)

def test_seed_flag_is_the_random_state(parsers):
    for cmd, p in parsers.items():
        seeds = [a for a in p._actions if '--seed' in a.option_strings]
        if seeds: assert seeds[0].dest == 'random_state', cmd

def test_cli_help_and_package_import_skip_torch():
    code = ("import sys, contextlib, io; import sediment_cluster; from sediment_cluster.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main([])\n"
            "print(sorted(m for m in ('torch', 'fastai', 'sklearn') if m in sys.modules))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stdout + r.stderr

def test_curated_api_resolves():
    import importlib, sediment_cluster
    for name, mod in sediment_cluster._API.items():
        assert getattr(sediment_cluster, name) is getattr(importlib.import_module(f'sediment_cluster.{mod}'), name)


def test_refine_choices_follow_the_library():
    "The command line lists the heads without importing torch; they must stay those `deepcluster.REFINES` accepts."
    from sediment_cluster.cubes.deepcluster import REFINES
    assert cli._REFINES == [r for r in REFINES if r is not None]
