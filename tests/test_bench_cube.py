"The datacube benchmark end to end on tiny sizes, including the UMAP baseline (too slow for the notebook)."
import re
import numpy as np, pytest
from sediment_cluster.bench import bench_cube, bench_cube_file
from sediment_cluster.core import InputError

def test_bench_cube_tiny(capsys):
    r = bench_cube(n_points=1500, k_range=(2, 4), size=32, n_channels=64, n_bins=16, umap_sample=1000, train_epochs=2,
                   progress=False)
    a, b = r['ikmeans'], r['segment']
    assert a['ours_s'] > 0 and a['sklearn_s'] > 0 and 2 <= a['ours_k'] <= 4
    assert b['shape'] == [32, 32, 64] and b['dask_same_labels'] and b['umap_sample'] == 1000
    assert b['umap_extrapolated_s'] == pytest.approx(b['umap_sample_s'] * 32 * 32 / 1000)
    assert b['speedup'] == pytest.approx(b['umap_extrapolated_s'] / b['segment_s'])
    out = capsys.readouterr().out
    assert 'UMAP path / ours' in out and 'ratio sklearn / ours' in out

def test_bench_cube_file_is_what_it_says(tmp_path):
    p, labels, sc = bench_cube_file(tmp_path/'c.npy', size=40, n_channels=32, counts=200, progress=False)
    cube = np.load(p, mmap_mode='r')
    assert cube.shape == (40, 40, 32) and cube.dtype == np.uint16 and labels.shape == (40, 40)
    assert abs(cube.sum(-1).mean() - 200) < 5 and set(np.unique(labels)) == set(np.unique(sc.labels))

@pytest.mark.parametrize('kw,msg', [(dict(parts=('gpu',)), "parts ['gpu']"), (dict(umap_sample=10), 'umap_sample=10'),
                                    (dict(n_points=5), 'n_points=5')])
def test_bench_cube_bad_input(kw, msg):
    with pytest.raises(InputError, match=re.escape(msg)): bench_cube(**kw)
