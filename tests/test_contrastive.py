"Contrastive encoder: views, loss, a short fit that learns, save/load, the feature set and bad input."
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from sediment_cluster.core import InputError
from sediment_cluster.particles.contrastive import (ContrastiveEncoder, FocalContrastiveNet, StackAugment,
                                                    encode_contrastive, load_contrastive, nt_xent, random_affine,
                                                    train_contrastive, warp)
from sediment_cluster.particles.features import feature_sets, read_feature_set
from sediment_cluster.particles.store import ParticleStore
from sediment_cluster.particles.vae import normalise

L, S = 3, 24
TINY = dict(size=S, dim=16, proj_dim=8, batch_size=8, lr=1e-3, valid_pct=.25, random_state=0)


def make_store(path, n=32, n_layers=L, size=S, n_stacks=4, seed=0) -> ParticleStore:
    "Particles of four shapes (disc, square, bar, ring) at random positions, colours and sizes, on a plain plate."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(float)
    crops = np.empty((n, n_layers, size, size, 3), np.uint8)
    for i in range(n):
        cy, cx, r = *rng.uniform(.4, .6, 2) * size, rng.uniform(.25, .35) * size
        d, kind = np.hypot(yy - cy, xx - cx), i % 4
        mask = [d < r, np.maximum(abs(yy - cy), abs(xx - cx)) < r * .8, (abs(yy - cy) < r * .3) & (abs(xx - cx) < r),
                (d < r) & (d > r * .6)][kind]
        col = rng.integers(60, 255, 3)
        for l in range(n_layers):
            crops[i, l] = np.where(mask[..., None], col * (.7 + .15 * l), (70, 150, 70)) + rng.integers(0, 6, (size,
                                                                                                        size, 3))
    table = pd.DataFrame({'stack_id': [f's{i % n_stacks}' for i in range(n)], 'kind': [i % 4 for i in range(n)]})
    table = table.sort_values('stack_id', kind='stable')
    return ParticleStore.create(path, table.reset_index(drop=True), crops[table.index])


@pytest.fixture(scope='module')
def store(tmp_path_factory): return make_store(tmp_path_factory.mktemp('store')/'s')


@pytest.fixture(scope='module')
def fitted(store):
    "30 epochs (90 steps): at 12 the NT-Xent loss stayed near chance (log 15 = 2.71); the views test hung on luck."
    return ContrastiveEncoder(epochs=30, **TINY).fit(store)


# --- views ---------------------------------------------------------------------------------------

def test_view_is_the_same_for_every_layer():
    x = torch.rand(5, 1, 3, S, S).expand(-1, 4, -1, -1, -1)
    v = StackAugment()(x, torch.Generator().manual_seed(0))
    assert all(torch.equal(v[:, 0], v[:, l]) for l in range(4))
    assert not torch.allclose(v, x)

def test_layers_get_the_same_transformation():
    "Augmenting a stack equals augmenting each layer alone with the same random draws (no contrast change)."
    aug, x = StackAugment(contrast=0.), torch.rand(4, 3, 3, S, S)
    whole = aug(x, torch.Generator().manual_seed(3))
    for l in range(3):
        assert torch.allclose(whole[:, l:l+1], aug(x[:, l:l+1], torch.Generator().manual_seed(3)), atol=1e-6)

def test_views_are_seeded():
    x = torch.rand(4, 2, 3, S, S)
    a, b = (StackAugment()(x, torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1

def test_full_turn_warp_is_identity():
    x = torch.rand(2, 2, 3, S, S)
    theta = random_affine(2, scale=(1., 1.), g=torch.Generator().manual_seed(0))
    theta[:, :, :2] = torch.eye(2)  # keep the (zero) shift, no rotation
    assert torch.allclose(warp(x, theta), x, atol=1e-5)

# --- loss ----------------------------------------------------------------------------------------

def test_nt_xent_matches_a_direct_computation():
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    zn, t = torch.nn.functional.normalize(z, dim=1), .3
    s = zn @ zn.T / t
    ref = np.mean([-(s[i, (i + 3) % 6] - torch.logsumexp(s[i][torch.arange(6) != i], 0)).item() for i in range(6)])
    assert math.isclose(nt_xent(z, t).item(), ref, rel_tol=1e-5)

def test_nt_xent_bad_shapes():
    for z in (torch.ones(5, 3), torch.ones(2, 3), torch.ones(4)):
        with pytest.raises(InputError, match='need 2B × d'): nt_xent(z)

# --- fitting -------------------------------------------------------------------------------------

def test_a_few_steps_reduce_the_loss(store):
    "Adam steps on one batch of views lower the NT-Xent loss from chance level."
    torch.manual_seed(0)
    net = FocalContrastiveNet(L, S, dim=16, proj_dim=8)
    x = torch.from_numpy(store[:16]).permute(0, 1, 4, 2, 3).float() / 255
    g, aug = torch.Generator().manual_seed(0), StackAugment()
    v = normalise(torch.cat([aug(x, g), aug(x, g)]))
    opt, losses = torch.optim.Adam(net.parameters(), 1e-3), []
    for _ in range(8):
        loss = nt_xent(net(v))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < .85 * losses[0], losses

def test_fit_lowers_the_validation_loss(fitted):
    h = pd.DataFrame(fitted.history_)
    assert len(h) == 30 and h.valid_loss.iloc[-3:].mean() < h.valid_loss.iloc[0], h

def test_two_views_embed_closer_than_other_particles(fitted, store):
    "After a short fit, a particle's two views are nearer (cosine) than views of different particles."
    x = torch.from_numpy(store[:]).permute(0, 1, 4, 2, 3).float() / 255
    g, aug, net = torch.Generator().manual_seed(9), StackAugment(), fitted.model_
    with torch.no_grad():
        a, b = (torch.nn.functional.normalize(net.embed(normalise(aug(x, g))), dim=1) for _ in range(2))
    sim = (a @ b.T).numpy()
    off = sim[~np.eye(len(sim), dtype=bool)]
    assert np.diag(sim).mean() > off.mean() + .1, (np.diag(sim).mean(), off.mean())
    assert (np.diag(sim)[:, None] > sim).mean() > .58  # the partner beats most other particles (chance: ½)

def test_transform_shape_and_determinism(fitted, store):
    Z = fitted.transform(store)
    assert Z.shape == (len(store), 16) and Z.dtype == np.float32 and np.isfinite(Z).all()
    assert np.allclose(Z, fitted.transform(store, batch_size=5), atol=1e-4)

def test_same_random_state_same_model(store):
    kw = {**TINY, 'epochs': 1}
    a, b = (ContrastiveEncoder(**kw).fit(store).transform(store) for _ in range(2))
    assert np.allclose(a, b, atol=1e-5)

def test_sklearn_clone_keeps_parameters():
    enc = ContrastiveEncoder(dim=7, scale=(.5, .9), random_state=4)
    assert clone(enc).get_params() == enc.get_params()

# --- save, load, feature set ---------------------------------------------------------------------

def test_save_load_roundtrip(fitted, store, tmp_path):
    back = load_contrastive(fitted.save(tmp_path/'c.pt'))
    assert np.array_equal(back.transform(store), fitted.transform(store))
    assert back.get_params() == fitted.get_params() and back.history_ == fitted.history_

def test_encode_writes_the_feature_set(fitted, store, tmp_path):
    s = make_store(tmp_path/'copy')
    p = encode_contrastive(s, fitted.save(tmp_path/'c.pt'), progress=False)
    assert p.name == 'features_contrastive.npy'
    assert np.array_equal(read_feature_set(s, 'contrastive'), fitted.transform(store))
    info = feature_sets(s)['contrastive']
    assert info['dim'] == 16 and info['model'] == str((tmp_path/'c.pt').resolve()) and not info['stale']

def test_train_contrastive_writes_a_model(store, tmp_path):
    out = train_contrastive(store, tmp_path/'m.pt', epochs=1, size=S, batch_size=8, dim=8, progress=False)
    enc = load_contrastive(out)
    assert enc.n_layers_ == L and enc.crop_size_ == S and len(enc.history_) == 1

# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize('kw, msg', [(dict(size=8), 'size=8: need an integer of at least 16'),
                                     (dict(epochs=0), 'epochs=0'), (dict(temperature=0), 'temperature=0'),
                                     (dict(scale=(.5, 1.5)), r'scale=\(0.5, 1.5\)'),
                                     (dict(backbone='vgg'), "backbone='vgg'")])
def test_bad_parameters(store, kw, msg):
    with pytest.raises(InputError, match=msg): ContrastiveEncoder(**{**TINY, **kw}).fit(store)

def test_missing_pretrained_weights_are_named(store, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    with pytest.raises(InputError, match=r'resnet18-f37072fd\.pth.*nothing is downloaded'):
        ContrastiveEncoder(pretrained=True, **TINY).fit(store)

def test_transform_before_fit(store):
    with pytest.raises(NotFittedError): ContrastiveEncoder().transform(store)

def test_store_that_does_not_fit(fitted, tmp_path):
    with pytest.raises(InputError, match='crops have 2 focal layers but the model has 3'):
        fitted.transform(make_store(tmp_path/'two', n_layers=2))
    with pytest.raises(InputError, match='crops are 32 px but the model was trained on 24-px crops'):
        fitted.transform(make_store(tmp_path/'big', size=32))

def test_too_few_particles(tmp_path):
    with pytest.raises(InputError, match='a contrastive fit needs at least'):
        ContrastiveEncoder(**TINY).fit(make_store(tmp_path/'few', n=4, n_stacks=2))

def test_single_stack(tmp_path):
    with pytest.raises(InputError, match='needs at least 2'):
        ContrastiveEncoder(**TINY).fit(make_store(tmp_path/'one', n_stacks=1))

def test_empty_store_and_bad_model_file(fitted, store, tmp_path):
    empty = ParticleStore.create(tmp_path/'empty', store.table.iloc[:0], store[:0])
    with pytest.raises(InputError, match='holds no particles'): encode_contrastive(empty, fitted, progress=False)
    (tmp_path/'x.pt').write_bytes(b'junk')
    with pytest.raises(InputError, match='not a readable ContrastiveEncoder model file'):
        load_contrastive(tmp_path/'x.pt')

def test_wrong_input_shape(fitted):
    with pytest.raises(InputError, match='this model takes B×3×3×24×24'): fitted.model_.embed(torch.rand(2, 3, 3, 8, 8))
    assert isinstance(fitted.model_, FocalContrastiveNet)
