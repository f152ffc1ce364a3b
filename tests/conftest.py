"Test-session settings that must be in place before torch or matplotlib is imported."
import os
# On 2 busy cores, torch's spinning OpenMP threads cost 3-5x the CPU (measured); let idle threads sleep.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
os.environ.setdefault('MPLBACKEND', 'Agg')

import pytest


@pytest.fixture(scope='session')
def make_clustered_store():
    "A factory: a clustered store of synthetic plates (2 µm per pixel) with pixel features as latents."
    def make(root, name:str, n_stacks:int, random_state:int, size:tuple, k:int, n_components:int):
        from sediment_cluster.particles.overcluster import cluster_store, pixel_features
        from sediment_cluster.particles.store import extract_store
        from sediment_cluster.particles.synth import synth_plates
        plates = synth_plates(root/'plates', n_stacks=n_stacks, random_state=random_state, size=size, progress=False)
        store = extract_store(plates, root/name, size=32, workers=1, progress=False, pixel_size_um=2.)
        store.write_array('latent.npy', pixel_features(store, n_components=n_components))
        cluster_store(store, k=k, random_state=0, progress=False)
        return store.path
    return make
