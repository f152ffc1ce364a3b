"Spectral autoencoders: architecture rules, loss terms, training loop, bad inputs, save/load and sklearn behaviour."
import math
import numpy as np, pandas as pd, pytest, torch
from hypothesis import given, settings, strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sediment_cluster.core import InputError
from sediment_cluster.latent import Ramp, TrainingDiverged, kl_divergence, mmd
from sediment_cluster.cubes.spectral import (SpectralAE, SpectralAutoencoder, LossTerm, autoencoder_loss, dense_block,
    layer_widths, train_autoencoder, VARIANTS)

C = 32
FAST = dict(latent=3, encoding=8, epochs=3, batch_size=64, verbose=False)

def spectra(n=200, c=C, seed=0):
    "Poisson spectra of two classes of one Gaussian peak each."
    rng = np.random.default_rng(seed)
    ch = np.arange(c)
    y = rng.integers(0, 2, n)
    mean = 1 + 30 * np.exp(-.5 * ((ch[None] - np.where(y, .3 * c, .7 * c)[:, None]) / 2) ** 2)
    return rng.poisson(mean).astype(np.float32)

@pytest.fixture(scope='module')
def X(): return spectra()

@pytest.fixture(scope='module')
def fitted(X): return SpectralAE(variant='infovae', random_state=0, **FAST).fit(X)

# --- architecture -------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(c=st.integers(2, 400), enc=st.integers(1, 64), n_hidden=st.integers(0, 7), latent=st.integers(1, 16),
       rule=st.sampled_from(['divide', 'halve']), kind=st.sampled_from(['mlp', 'snn']),
       variant=st.sampled_from(VARIANTS))
def test_decoder_mirrors_encoder(c, enc, n_hidden, latent, rule, kind, variant):
    net = SpectralAutoencoder(c, latent, enc, n_hidden, rule, kind, variant)
    assert net.decoder_widths == net.encoder_widths[::-1]
    w = net.encoder_widths
    assert w[0] == c and w[-2:] == [enc, latent]
    assert all(h > enc for h in w[1:-2]) and w[1:-2] == sorted(w[1:-2], reverse=True)

def test_width_rules_follow_the_paper():
    assert layer_widths(512, 64, 6) == [512, 512 // 2, 512 // 3, 512 // 4, 512 // 5, 512 // 6, 512 // 7, 64]
    assert layer_widths(512, 64, 6, 'halve') == [512, 256, 128, 64]
    assert layer_widths(16, 32) == [16, 32]  # nothing wider than the encoding: straight to it
    with pytest.raises(InputError, match="rule='thirds'"): layer_widths(64, 8, rule='thirds')

@pytest.mark.parametrize('kind,gain', [('mlp', math.sqrt(2)), ('snn', 1.)])
def test_init_std_matches_activation(kind, gain):
    torch.manual_seed(1)
    lin = dense_block(1000, 500, kind)[0]
    want = gain / math.sqrt(1000)
    assert abs(lin.weight.std().item() - want) < 0.02 * want and abs(lin.weight.mean().item()) < 0.05 * want
    assert torch.all(lin.bias == 0)

def test_heads_are_lecun_initialised():
    torch.manual_seed(2)
    net = SpectralAutoencoder(1024, 64, encoding=512, variant='vae')
    assert abs(net.head.weight.std().item() - 1 / math.sqrt(512)) < 0.02 / math.sqrt(512)

@pytest.mark.parametrize('kind', ['mlp', 'snn'])
def test_blocks_use_the_right_layers(kind):
    names = [type(m).__name__ for m in dense_block(8, 4, kind)]
    assert names == (['Linear', 'ReLU', 'Dropout'] if kind == 'mlp' else ['Linear', 'SELU', 'AlphaDropout'])

@pytest.mark.parametrize('variant', VARIANTS)
def test_forward_shapes_and_eval_mode_is_deterministic(variant):
    net = SpectralAutoencoder(C, 4, 8, variant=variant)
    out = net(torch.rand(10, C))
    assert out.x_hat.shape == (10, C) and out.z.shape == out.mu.shape == (10, 4)
    assert (out.logvar is None) == (variant == 'ae')
    net.eval()
    x = torch.rand(5, C)
    assert torch.equal(net(x).x_hat, net(x).x_hat)

def test_bad_network_choices():
    with pytest.raises(InputError, match="variant='vq'"): SpectralAutoencoder(C, variant='vq')
    with pytest.raises(InputError, match="kind='cnn'"): SpectralAutoencoder(C, kind='cnn')

# --- loss terms ---------------------------------------------------------------------------------

def test_kl_of_standard_normal_is_zero_and_positive_otherwise():
    assert kl_divergence(torch.zeros(7, 4), torch.zeros(7, 4)).item() == 0.
    assert kl_divergence(torch.full((3, 2), .5), torch.full((3, 2), -1.)).item() > 0
    # closed form for one dimension: ½(σ² + μ² − 1 − ln σ²)
    mu, lv = torch.tensor([[0.7]]), torch.tensor([[0.4]])
    assert math.isclose(kl_divergence(mu, lv).item(), 0.5 * (math.exp(0.4) + 0.49 - 1 - 0.4), rel_tol=1e-6)

@pytest.mark.parametrize('kernel', ['gaussian', 'imq'])
def test_mmd_identical_zero_shifted_positive(kernel):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(800, 6, generator=g), torch.randn(800, 6, generator=g)
    assert abs(mmd(a, a, kernel).item()) < 2 / 800          # unbiased: exactly −2(1 − mean k)/n
    assert abs(mmd(a, b, kernel).item()) < 5e-3
    assert mmd(a, b + 0.5, kernel).item() > 10 * abs(mmd(a, b, kernel).item())
    assert math.isclose(mmd(a, b[:300], kernel).item(), mmd(b[:300], a, kernel).item(), rel_tol=1e-4, abs_tol=1e-6)

def test_mmd_gradient_is_finite_for_coincident_points():
    x = torch.zeros(4, 3, requires_grad=True)
    mmd(x, torch.randn(4, 3)).backward()
    assert torch.isfinite(x.grad).all()

def test_mmd_bad_inputs():
    with pytest.raises(InputError, match="kernel='laplace'"): mmd(torch.zeros(3, 2), torch.zeros(3, 2), 'laplace')
    with pytest.raises(InputError, match='at least 2 points'): mmd(torch.zeros(1, 2), torch.zeros(3, 2))

def test_ramp_and_epoch_dependent_beta_in_the_loss():
    r = Ramp(0., 2., 1, 3)
    assert [r(e) for e in range(5)] == [0., 0., 1., 2., 2.]
    net = SpectralAutoencoder(C, 2, 8, variant='vae')
    x = torch.rand(16, C)
    out = net(x)
    t0, t3 = autoencoder_loss(net, x, out, 0, beta=r), autoencoder_loss(net, x, out, 3, beta=r)
    assert torch.isclose(t0['loss'], t0['rec']) and torch.isclose(t3['loss'], t3['rec'] + 2 * t3['kl'])

# --- training -----------------------------------------------------------------------------------

@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('kind', ['mlp', 'snn'])
def test_a_few_steps_reduce_the_loss(X, variant, kind):
    torch.manual_seed(0)
    S = torch.from_numpy(X / np.sqrt((X ** 2).mean()))
    net = SpectralAutoencoder(C, 3, 8, kind=kind, variant=variant)
    hist = train_autoencoder(net, S, None, beta=0.01, epochs=8, batch_size=32, lr=3e-3, patience=100, verbose=False)
    assert hist[-1]['rec'] < 0.7 * hist[0]['rec']

def test_extra_loss_hooks_are_called_and_logged(X):
    class Spy(LossTerm):
        def __init__(self): self.epochs, self.sizes = [], []
        def on_epoch_begin(self, model, epoch, X):
            self.epochs.append(epoch)
            self.sizes.append(len(X))
        def __call__(self, model, x, out, epoch): return {'pull': 0.1 * out.z.pow(2).mean()}
    spy = Spy()
    est = SpectralAE(extra_loss=spy, val_fraction=0.25, random_state=0, **FAST).fit(X)
    assert spy.epochs == [0, 1, 2] and set(spy.sizes) == {150}
    assert {'pull', 'val_pull'} <= set(est.history_.columns)

def test_changing_weights_restart_the_best_model_bookkeeping(X):
    # while β ramps the monitored loss is not comparable across epochs: the kept epoch is the last ramp epoch or later
    est = SpectralAE(variant='vae', beta=Ramp(0, 1, 0, 4), patience=1, random_state=0, **{**FAST, 'epochs': 6}).fit(X)
    assert est.history_.beta.tolist()[:5] == [0, .25, .5, .75, 1]
    assert est.best_epoch_ >= 4 and len(est.history_) >= 5

def test_nan_loss_stops_with_epoch_and_keeps_good_weights(X):
    nan_at_1 = lambda model, x, out, epoch: torch.tensor(math.nan if epoch == 1 else 0.)
    est = SpectralAE(extra_loss=nan_at_1, random_state=0, **{**FAST, 'epochs': 5})
    with pytest.raises(TrainingDiverged, match='non-finite loss at epoch 1.*kept the weights of epoch 0') as e:
        est.fit(X)
    assert isinstance(e.value, InputError) and len(e.value.args[0].splitlines()) == 1
    assert len(est.history_) == 1 and est.best_epoch_ == 0
    assert np.isfinite(est.transform(X)).all()

def test_early_stopping_restores_best_epoch(X):
    est = SpectralAE(random_state=0, patience=2, **{**FAST, 'epochs': 200, 'lr': 3e-2}).fit(X)
    h = est.history_
    assert len(h) < 200 and est.best_epoch_ == h.epoch[h.val_loss.idxmin()]
    assert len(h) - 1 - est.best_epoch_ >= 2

def test_fit_does_not_disturb_the_global_torch_rng(X):
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    SpectralAE(random_state=1, **FAST).fit(X)
    got = torch.rand(3)
    assert torch.equal(want, got)

def test_same_random_state_same_latent(X):
    a = SpectralAE(variant='vae', random_state=3, **FAST).fit(X).transform(X)
    b = SpectralAE(variant='vae', random_state=3, **FAST).fit(X).transform(X)
    c = SpectralAE(variant='vae', random_state=4, **FAST).fit(X).transform(X)
    assert np.array_equal(a, b) and not np.array_equal(a, c)

def test_verbose_false_is_silent(X, capsys):
    SpectralAE(random_state=0, **FAST).fit(X)
    assert capsys.readouterr().err == ''

# --- bad inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize('bad,needle', [
    (np.zeros((4, 5, C)), 'got shape (4, 5, 32); flatten a cube'),
    (np.zeros(C), 'expected an N×C array'),
    (np.zeros((3, C + 1)), '33 channels but the model was fitted on 32'),
    (np.zeros((0, C)), 'empty array'),
    (np.full((2, C), np.inf), 'NaN or inf'),
    ([['a'] * C], 'not a numeric array'),
])
def test_transform_bad_input(fitted, bad, needle):
    with pytest.raises(InputError, match=None) as e: fitted.transform(bad)
    assert needle in str(e.value) and len(str(e.value).splitlines()) == 1

def test_inverse_transform_checks_latent_width(fitted):
    with pytest.raises(InputError, match='4 latent dimensions but the model has latent=3'):
        fitted.inverse_transform(np.zeros((2, 4)))

@pytest.mark.parametrize('params,needle', [
    (dict(variant='vqvae'), "variant='vqvae'"), (dict(kind='cnn'), "kind='cnn'"),
    (dict(kernel='rbf'), "kernel='rbf'"), (dict(scale='std'), "scale='std'"),
    (dict(batch_size=1), 'batch_size=1'), (dict(val_fraction=1.), 'val_fraction=1.0'),
    (dict(device='tpu'), "device='tpu'"), (dict(rule='thirds'), "rule='thirds'"),
])
def test_bad_hyperparameters_fail_at_fit(X, params, needle):
    with pytest.raises(InputError) as e: SpectralAE(**{**FAST, **params}).fit(X)
    assert needle in str(e.value)

def test_fit_needs_two_spectra_and_transform_needs_fit(X):
    with pytest.raises(InputError, match='at least 2'): SpectralAE(**FAST).fit(X[:1])
    with pytest.raises(NotFittedError): SpectralAE(**FAST).transform(X)

@pytest.mark.parametrize('variant', VARIANTS)
def test_all_zero_spectra_make_no_nan(X, variant):
    Xz = X.copy()
    Xz[::4] = 0
    est = SpectralAE(variant=variant, random_state=0, **FAST).fit(Xz)
    assert np.isfinite(est.history_.drop(columns='epoch').to_numpy()).all()
    assert np.isfinite(est.transform(np.zeros((3, C)))).all()
    zero = SpectralAE(variant=variant, random_state=0, **FAST).fit(np.zeros((40, C)))
    assert zero.scale_ == 1. and np.isfinite(zero.transform(np.zeros((2, C)))).all()

# --- save / load --------------------------------------------------------------------------------

def test_save_load_round_trip(fitted, X, tmp_path):
    path = fitted.save(tmp_path/'sub'/'m.pt')
    assert [p.name for p in path.parent.iterdir()] == ['m.pt']  # the temporary file was renamed away
    back = SpectralAE.load(path)
    assert np.array_equal(back.transform(X), fitted.transform(X))
    Z = fitted.transform(X[:4])
    assert np.array_equal(back.inverse_transform(Z), fitted.inverse_transform(Z))
    assert back.get_params() == fitted.get_params() and back.scale_ == fitted.scale_
    pd.testing.assert_frame_equal(back.history_, fitted.history_)

def test_save_keeps_ramp_and_drops_callables(X, tmp_path):
    est = SpectralAE(variant='vae', beta=Ramp(0, .1, 0, 2), extra_loss=lambda *a: torch.tensor(0.), random_state=0,
                     **FAST).fit(X)
    with pytest.warns(UserWarning, match='extra_loss'): est.save(tmp_path/'m.pt')
    back = SpectralAE.load(tmp_path/'m.pt')
    assert back.beta == Ramp(0, .1, 0, 2) and back.extra_loss is None

def test_load_bad_files(tmp_path):
    with pytest.raises(InputError, match='no such model file'): SpectralAE.load(tmp_path/'nope.pt')
    (tmp_path/'junk.pt').write_bytes(b'not a torch file')
    with pytest.raises(InputError, match='not a readable SpectralAE model'): SpectralAE.load(tmp_path/'junk.pt')
    torch.save({'weights': torch.zeros(2)}, tmp_path/'other.pt')
    with pytest.raises(InputError, match='not a SpectralAE model file'): SpectralAE.load(tmp_path/'other.pt')

# --- scikit-learn behaviour ---------------------------------------------------------------------

def test_sklearn_conventions(fitted, X):
    est = SpectralAE(latent=5)
    assert est.get_params()['latent'] == 5 and not any(k.endswith('_') for k in vars(est))
    c = clone(fitted)
    assert c.get_params() == fitted.get_params() and not hasattr(c, 'model_')
    assert SpectralAE(**FAST).fit(X) is not None
    assert list(fitted.get_feature_names_out()) == ['spectralae0', 'spectralae1', 'spectralae2']
    Z = make_pipeline(SpectralAE(random_state=0, **FAST)).fit_transform(X)
    assert Z.shape == (len(X), 3) and Z.dtype == np.float32

def test_set_output_pandas(X):
    Z = SpectralAE(random_state=0, **FAST).set_output(transform='pandas').fit_transform(X)
    assert isinstance(Z, pd.DataFrame) and list(Z.columns) == ['spectralae0', 'spectralae1', 'spectralae2']

def test_reconstruction_error_and_score(fitted, X):
    err = fitted.reconstruction_error(X)
    assert err.shape == (len(X),) and (err >= 0).all()
    assert math.isclose(fitted.score(X), -err.mean() / fitted.scale_ ** 2, rel_tol=1e-5)

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_cuda_fit_and_cpu_load(X, tmp_path):
    est = SpectralAE(device='cuda', random_state=0, **FAST).fit(X)
    assert est.device_.type == 'cuda' and next(est.model_.parameters()).is_cuda
    back = SpectralAE.load(est.save(tmp_path/'m.pt'), device='cpu')
    assert np.allclose(back.transform(X), est.transform(X), atol=1e-4)

# --- NaN/inf in a cube given to train-spectral ----------------------------------------------------

def _cube_with_holes(path):
    "A 10×8×32 Poisson cube written to `path`, NaN at pixel (3, 6) channel 5, inf at (7, 2) channel 0 and 9."
    from sediment_cluster.cubes.datacube import write_cube
    a = np.random.default_rng(3).poisson(4, (10, 8, 32)).astype(np.float32)
    a[3, 6, 5], a[7, 2, 0], a[7, 2, 9] = np.nan, np.inf, -np.inf
    return write_cube(path, a, np.linspace(1, 20, 32))

NAN_LINE = '2 of 80 pixels hold NaN or inf (first: pixel (row 3, column 6), channel 5); replace them'

@pytest.mark.parametrize('name', ['c.h5', 'c.zarr', 'c.npy'])
def test_train_spectral_names_the_file_and_first_bad_pixel(tmp_path, name):
    from sediment_cluster.cubes.deepcluster import train_spectral
    p = _cube_with_holes(tmp_path/name)
    with pytest.raises(InputError) as e:   # 5 of 80 spectra sampled: every pixel is checked, drawn or not
        train_spectral(p, tmp_path/'m.pt', max_spectra=5, chunk_rows=2, progress=False)
    assert str(e.value).startswith(f'{p}: {NAN_LINE}') and '\n' not in str(e.value)
    assert not (tmp_path/'m.pt').exists()

def test_train_spectral_cli_nan_is_one_line(tmp_path):
    import shutil, subprocess, sys
    from pathlib import Path
    exe = shutil.which('sediment-cluster', path=str(Path(sys.executable).parent))
    p = _cube_with_holes(tmp_path/'holes.h5')
    r = subprocess.run([exe, 'train-spectral', str(p), '--out', str(tmp_path/'m.pt'), '--epochs', '1', '--k-max', '3'],
                       capture_output=True, text=True, timeout=300)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert last.startswith('sediment-cluster train-spectral: error: ') and f'holes.h5: {NAN_LINE}' in last
    assert not (tmp_path/'m.pt').exists()
