"Multi-focal VAE: shapes, loss terms, training steps, save/load, resume, divergence and bad input."
import math, shutil
import numpy as np, pandas as pd, pytest, torch
from fastai.callback.core import Callback
from sediment_cluster.core import InputError
from sediment_cluster.latent import TrainingDiverged, kl_divergence, mmd
from sediment_cluster.particles.store import ParticleStore
from sediment_cluster.particles.vae import (BatchNormStats, FocalDecoder, FocalVAE, VAELoss, crop_dataloaders,
    dihedral, encode, encode_store, load_vae, prepare_crops, pretrained_file, recompute_bn, resnet_trunk,
    restore_crops, save_vae, stack_split, train_vae, vae_learner, weight_files)

L, S = 3, 16
TINY = dict(size=16, latent=8, shared_weights=True)
RUN = dict(epochs=1, lr=1e-3, batch_size=8, progress=False, **TINY)

def make_store(path, n=24, n_layers=L, size=S, n_stacks=4, seed=0) -> ParticleStore:
    "A store of `n` particles whose crops are a coloured blob on a green plate, with random size and colour."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    crops = np.empty((n, n_layers, size, size, 3), np.uint8)
    for i in range(n):
        r, col = rng.uniform(.2, .45) * size, rng.integers(0, 255, 3)
        blob = (xx ** 2 + yy ** 2 < r ** 2)[..., None]
        for l in range(n_layers):
            crops[i, l] = np.where(blob, col * (.6 + .1 * l), (60, 160, 60)) + rng.integers(0, 8, (size, size, 3))
    table = pd.DataFrame({'stack_id': [f's{i % n_stacks}' for i in range(n)]}).sort_values('stack_id', kind='stable')
    return ParticleStore.create(path, table.reset_index(drop=True), crops[table.index])

@pytest.fixture(scope='module')
def store(tmp_path_factory): return make_store(tmp_path_factory.mktemp('store')/'s')

@pytest.fixture(scope='module')
def trained(store, tmp_path_factory):
    torch.manual_seed(0)
    return train_vae(store, tmp_path_factory.mktemp('model')/'vae.pt', **RUN)

# --- network -------------------------------------------------------------------------------------

@pytest.mark.parametrize('size', [16, 24, 33, 64])
def test_decoder_output_size(size):
    assert FocalDecoder(4, 2, size)(torch.randn(3, 4)).shape == (3, 2, 3, size, size)

@pytest.mark.parametrize('shared', [False, True])
def test_shapes(shared):
    net = FocalVAE(L, S, latent=5, shared_weights=shared)
    x_hat, z, mu, logvar = net(torch.randn(2, L, 3, S, S))
    assert x_hat.shape == (2, L, 3, S, S) and z.shape == mu.shape == logvar.shape == (2, 5)
    assert len(net.branches) == (1 if shared else L)
    assert net.head.in_features == L * 512

def test_resnet50_features():
    assert resnet_trunk('resnet50').n_features == 2048

def test_eval_mode_is_deterministic():
    net = FocalVAE(L, S, **{k: v for k, v in TINY.items() if k != 'size'}).eval()
    x = torch.randn(2, L, 3, S, S)
    out = net(x)
    assert torch.equal(out[1], out[2]) and torch.equal(net(x)[0], out[0])

def test_bad_model_arguments():
    with pytest.raises(InputError, match="backbone='resnet9'"): FocalVAE(backbone='resnet9')
    with pytest.raises(InputError, match='size=8: need an integer of at least 16'): FocalVAE(size=8)
    with pytest.raises(InputError, match='latent=0'): FocalVAE(latent=0)
    with pytest.raises(InputError, match=r'this model takes B×3×3×16×16'):
        FocalVAE(L, S, **{k: v for k, v in TINY.items() if k != 'size'})(torch.randn(2, 4, 3, S, S))

# --- pretrained weights --------------------------------------------------------------------------

def test_missing_pretrained_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    with pytest.raises(InputError, match=r'checkpoints/resnet152-394f9c45\.pth.*nothing is downloaded'):
        FocalVAE(backbone='resnet152', pretrained=True)
    with pytest.raises(InputError, match='no such weight file'): resnet_trunk('resnet18', pretrained=tmp_path/'x.pth')

def test_pretrained_from_cache_and_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    (tmp_path/'checkpoints').mkdir()
    ref = resnet_trunk('resnet18')
    ref.fc = torch.nn.Linear(512, 1000)
    sd = {k: v for k, v in ref.state_dict().items()}
    torch.save(sd, tmp_path/'checkpoints'/weight_files('resnet18')[0])
    assert pretrained_file('resnet18') == tmp_path/'checkpoints'/'resnet18-f37072fd.pth'
    for src in (True, tmp_path/'checkpoints'/'resnet18-f37072fd.pth'):
        assert torch.equal(resnet_trunk('resnet18', src).layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    torch.save({'conv1.weight': torch.zeros(1)}, tmp_path/'bad.pth')
    with pytest.raises(InputError, match='not torchvision ImageNet weights for resnet18'):
        resnet_trunk('resnet18', tmp_path/'bad.pth')

# --- loss terms ----------------------------------------------------------------------------------

def test_kl_of_standard_normal_is_zero():
    z = torch.zeros(10, 7)
    assert kl_divergence(z, z).item() == 0.
    assert kl_divergence(torch.ones(1, 4), z[:1, :4]).item() == pytest.approx(2.)

def test_mmd_of_identical_samples_is_near_zero():
    s = torch.randn(400, 8, generator=torch.Generator().manual_seed(1))
    assert abs(mmd(s, s).item()) < 5e-3
    assert mmd(s, s + 2).item() > .1

def test_vae_loss_terms():
    x = torch.randn(4, L, 3, S, S)
    zero = torch.zeros(4, 5)
    assert VAELoss()((x, zero, zero, zero), x).item() == 0.
    # summed squared error per particle (L·3·S·S values of 1) + β·KL (½·Σ mu² = ½·5·4 = 10 per particle)
    assert VAELoss(beta=2.)((x + 1, zero, zero + 2, zero), x).item() == pytest.approx(L * 3 * S * S + 2 * 10)
    t = VAELoss(regulariser='mmd').terms((x, torch.randn(4, 5), zero, zero), x)
    assert set(t) == {'rec', 'mmd'} and t['rec'].item() == 0.
    one = (x[:1], zero[:1], zero[:1], zero[:1])
    assert VAELoss(regulariser='mmd').terms(one, x[:1])['mmd'].item() == 0.  # one particle: no MMD
    with pytest.raises(InputError, match="regulariser='bce'"): VAELoss(regulariser='bce')

# --- data ----------------------------------------------------------------------------------------

def test_prepare_restore_roundtrip(store):
    c = store[:5]
    x = prepare_crops(c)
    assert x.shape == (5, L, 3, S, S) and x.dtype == torch.float32
    assert np.array_equal(restore_crops(x), c)
    assert prepare_crops(c, 32).shape == (5, L, 3, 32, 32)

def test_dihedral_same_for_all_layers():
    torch.manual_seed(0)
    x = torch.randn(64, L, 3, 8, 8)
    y = dihedral(x)
    for b in range(64):
        cands = [torch.rot90(x[b].flip(-1) if t >= 4 else x[b], t % 4, dims=(-2, -1)) for t in range(8)]
        assert sum(torch.equal(y[b], c) for c in cands) == 1
    assert not torch.equal(x, y)

def test_split_by_stack(store):
    tr, va = stack_split(store.table, .25, 0)
    assert set(store.table.stack_id[tr]).isdisjoint(store.table.stack_id[va])
    assert len(tr) + len(va) == len(store)
    dls = crop_dataloaders(store, batch_size=5)
    xb, = dls.train.one_batch()
    assert xb.shape == (5, L, 3, S, S)

def test_single_stack_refused(tmp_path):
    one = make_store(tmp_path/'one', n=6, n_stacks=1)
    with pytest.raises(InputError, match='holds 1 stack'): train_vae(one, tmp_path/'m.pt', **RUN)

# --- training ------------------------------------------------------------------------------------

def test_a_few_steps_reduce_the_loss(store):
    torch.manual_seed(0)
    learn = vae_learner(store, FocalVAE(L, **TINY), batch_size=8, lr=1e-3, progress=False)
    xb, = learn.dls.valid.one_batch()
    learn.model.train()
    lf, opt = learn.loss_func, torch.optim.Adam(learn.model.parameters(), 1e-3)
    losses = []
    for _ in range(5):
        loss = lf(learn.model(xb), xb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < .7 * losses[0], losses

def test_recompute_bn_averages_the_batches():
    bn = torch.nn.BatchNorm2d(2).eval()
    bn.running_var.fill_(9.)
    data = torch.rand(5, 4, 2, 3, 3) * 3 - 1
    recompute_bn(bn, list(data), max_batches=3)
    assert torch.allclose(bn.running_mean, data[:3].transpose(1, 2).flatten(2).mean((0, 2)), atol=1e-5)
    assert int(bn.num_batches_tracked) == 3 and not bn.training and bn.momentum == .1

def test_validation_sees_recomputed_bn_stats(store):
    "After a fit, the running statistics come from one pass over the training batches, not the momentum updates."
    torch.manual_seed(0)
    learn = vae_learner(store, FocalVAE(L, **TINY), batch_size=4, lr=1e-2, progress=False)
    learn.fit(2)
    n_train = len(learn.dls.train)
    assert n_train > 1
    bns = [m for m in learn.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {int(m.num_batches_tracked) for m in bns} == {n_train}  # 2 * n_train with momentum updates
    learn.remove_cb(BatchNormStats)
    learn.fit(1)
    assert {int(m.num_batches_tracked) for m in bns} == {2 * n_train}

def test_train_vae_writes_model(trained, store):
    m = load_vae(trained)
    assert m.config == {'n_layers': L, 'size': 16, 'latent': 8, 'backbone': 'resnet18',
                        'shared_weights': True, 'decoder_width': 256}
    assert m.meta['crop_size'] == S and len(m.meta['history']) == 1 and m.meta['best_epoch'] == 0
    assert not trained.with_name(trained.name + '.ckpt').exists()

class Poison(Callback):
    order = 15
    def __init__(self, epoch): self.at = epoch
    def after_pred(self):
        if self.epoch >= self.at: self.learn.pred = tuple(t * math.nan for t in self.pred)

def test_nan_stops_and_keeps_last_good_model(store, tmp_path):
    with pytest.raises(TrainingDiverged,
                       match=r'loss nan at epoch 1, batch 0 \(training\); kept the model of epoch 0') as e:
        train_vae(store, tmp_path/'m.pt', cbs=[Poison(1)], **{**RUN, 'epochs': 3})
    assert isinstance(e.value, InputError) and len(e.value.history) == 1
    m = load_vae(tmp_path/'m.pt')
    assert m.meta['best_epoch'] == 0 and all(torch.isfinite(p).all() for p in m.parameters())
    assert np.isfinite(encode(m, store, progress=False)).all()

def test_nan_in_first_epoch_writes_nothing(store, tmp_path):
    with pytest.raises(TrainingDiverged, match='no epoch finished, so no model was written'):
        train_vae(store, tmp_path/'m.pt', cbs=[Poison(0)], **RUN)
    assert not (tmp_path/'m.pt').exists()

def test_nan_stop_leaves_weights_finite(store):
    learn = vae_learner(store, FocalVAE(L, **TINY), batch_size=8, lr=1e-3, progress=False)
    learn.fit(2, cbs=Poison(1))
    assert learn.non_finite_stop.where['epoch'] == 1
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())

class Interrupt(Callback):
    order = 90
    def after_epoch(self):
        if self.epoch == 0: raise KeyboardInterrupt

def test_resume_continues_and_refuses_other_config(store, tmp_path):
    run = {**RUN, 'epochs': 2}
    with pytest.raises(KeyboardInterrupt): train_vae(store, tmp_path/'m.pt', cbs=[Interrupt()], **run)
    assert torch.load(tmp_path/'m.pt.ckpt', weights_only=True)['epoch'] == 0
    with pytest.raises(InputError, match="run with backbone='resnet18', not 'resnet34'; delete it") as e:
        train_vae(store, tmp_path/'m.pt', **{**run, 'backbone': 'resnet34'})
    assert 'pass resume=False' not in str(e.value)   # the command line has no such flag
    train_vae(store, tmp_path/'m.pt', **run)
    assert [h['epoch'] for h in load_vae(tmp_path/'m.pt').meta['history']] == [0, 1]

# --- encode, save, load ---------------------------------------------------------------------------

def test_save_load_roundtrip_gives_identical_mu(trained, store, tmp_path):
    a = encode_store(store, trained, batch_size=5, progress=False)
    mu = np.load(a)
    assert mu.shape == (len(store), 8) and mu.dtype == np.float32
    m = load_vae(trained)
    save_vae(m, tmp_path/'copy.pt')
    assert np.array_equal(encode(load_vae(tmp_path/"copy.pt"), store, batch_size=5, progress=False), mu)
    np.testing.assert_allclose(encode(m, store,
                                      batch_size=7, progress=False), mu, atol=1e-5)  # batching changes only rounding
    with torch.no_grad(): direct = m.encode(prepare_crops(store[[3]], 16))[0].numpy()
    np.testing.assert_allclose(mu[3:4], direct, atol=1e-5)  # row i is particle i

def test_store_without_crops(store, tmp_path):
    shutil.copytree(store.path, tmp_path/'s')
    shutil.rmtree(tmp_path/'s'/'crops.zarr')
    with pytest.raises(InputError, match=r'crops.zarr: missing \(deleted\?\); write the store again'):
        train_vae(tmp_path/'s', tmp_path/'m.pt', **RUN)
    with pytest.raises(InputError, match=r'crops.zarr: missing'):
        encode_store(tmp_path/'s', FocalVAE(L, **TINY), progress=False)

def test_layer_count_mismatch(trained, tmp_path):
    other = make_store(tmp_path/'s4', n=6, n_layers=4)
    with pytest.raises(InputError, match='crops have 4 focal layers but the model has 3'):
        encode_store(other, trained, progress=False)

def test_crop_size_mismatch(trained, tmp_path):
    other = make_store(tmp_path/'s24', n=6, size=24)
    with pytest.raises(InputError,
                       match='crops are 24 px but the model was trained on 16-px crops; extract with --size 16'):
        encode_store(other, trained, progress=False)

def test_bad_model_files(tmp_path):
    with pytest.raises(InputError, match='no such model file'): load_vae(tmp_path/'none.pt')
    (tmp_path/'junk.pt').write_bytes(b'junk')
    with pytest.raises(InputError, match='not a readable FocalVAE model file'): load_vae(tmp_path/'junk.pt')
    torch.save({'format': 'other'}, tmp_path/'other.pt')
    with pytest.raises(InputError, match='not a FocalVAE model'): load_vae(tmp_path/'other.pt')

def test_damaged_checkpoint_is_one_line(store, tmp_path):
    (tmp_path/'m.pt.ckpt').write_bytes(b'PK\x03\x04 not a checkpoint')
    with pytest.raises(InputError, match=r'm.pt.ckpt: damaged checkpoint \(\w+\); delete it to start training over'):
        train_vae(store, tmp_path/'m.pt', **RUN)
    torch.save({'epoch': 0}, tmp_path/'m.pt.ckpt')
    with pytest.raises(InputError, match='m.pt.ckpt: not a train-vae checkpoint; delete it'):
        train_vae(store, tmp_path/'m.pt', **RUN)

def test_truncated_model_file(trained, store, tmp_path):
    (tmp_path/'cut.pt').write_bytes(trained.read_bytes()[:1000])
    with pytest.raises(InputError, match='cut.pt: not a readable FocalVAE model file'):
        encode_store(store, tmp_path/'cut.pt', progress=False)

def test_encode_refuses_an_empty_store(tmp_path):
    empty = ParticleStore.create(tmp_path/'e', pd.DataFrame({'stack_id': []}), np.zeros((0, L, S, S, 3), np.uint8))
    with pytest.raises(InputError, match='the store holds no particles; nothing to encode'):
        encode_store(empty, FocalVAE(L, **TINY), progress=False)

def test_encode_records_latent_and_flags_stale_clusters(trained, tmp_path):
    import json
    from sediment_cluster.particles.overcluster import cluster_store, montage_image
    st = make_store(tmp_path/'s')
    encode_store(st, trained, progress=False)
    rec = json.loads((st.path/'manifest.json').read_text())['files']['latent.npy']
    assert rec['rebuild'] == f'sediment-cluster encode {st.path} --model {trained.resolve()}'
    assert st.stale('latent.npy') == []
    cluster_store(st, k=3, progress=False)
    other = FocalVAE(L, **TINY)   # another model: other features
    with pytest.warns(UserWarning, match=r'clusters.parquet was computed from the previous latent.npy and is now '
                                         r'stale; rebuild it with `sediment-cluster cluster \S+ --k 3'):  # its flags
        encode_store(st, other, progress=False)
    assert st.stale('clusters.parquet') == ['latent.npy']
    with pytest.raises(InputError, match='from an earlier latent.npy; rebuild it with `sediment-cluster cluster'):
        montage_image(st, 0)   # galleries refuse clusters of the old features
    cluster_store(st, k=3, progress=False)
    assert st.stale('clusters.parquet') == []

# --- the epoch table ------------------------------------------------------------------------------

def test_epoch_table_keeps_columns_apart_for_large_losses(store, capsys):
    "fastprogress pads values to the header width: a loss of 3264512.5 ran into the next column."
    from fastprogress.fastprogress import ConsoleMasterBar
    from sediment_cluster.particles.vae import TableProgress
    learn = vae_learner(store, FocalVAE(L, **TINY), progress=True)
    bars = lambda learn: [c for c in learn.cbs if 'Progress' in type(c).__name__]
    assert isinstance(learn.progress, TableProgress) and len(bars(learn)) == 1
    cb = learn.progress
    cb.mbar = ConsoleMasterBar(range(1))
    names = ['epoch', 'train_loss', 'valid_loss', 'recon_mse', 'latent_kl', 'time']
    cb._write_stats(names)
    cb._write_stats([0, 3264512.5, 18640.236328, -0.663833, -1e100, '00:08'])
    head, row = capsys.readouterr().out.splitlines()[-2:]
    values = ['0', '3.26451e+06', '18640.236328', '-0.663833', '-1.00000e+100', '00:08']
    assert head.split() == names and row.split() == values
    assert [head.index(n) for n in names] == [row.index(v) for v in values]   # each value under its header
    assert bars(vae_learner(store, FocalVAE(L, **TINY), progress=False)) == []
