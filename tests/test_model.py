import pytest
import torch

from tvae_sweep import ModelConfig, build_model
from tvae_sweep.model import TopographicVAE, topographic, window_offsets


@pytest.fixture(params=["matrix", "rolls"])
def energy_form(request, monkeypatch):
    """Runs a test with W as one dense matrix and again as a sum of rolls (the form for large S*D)."""
    if request.param == "rolls":
        monkeypatch.setattr(topographic, "DENSE_LIMIT", 0)
    return request.param


def topographic_energy(u_sq, coherence_window, n_off_diag, shift):
    """v = W(u^2) as a sequence model of u_sq's shape (B, S, C, D) computes it."""
    _, s, c, d = u_sq.shape
    cfg = ModelConfig(n_caps=c, cap_dim=d, seq_len=s, coherence_window=coherence_window, n_off_diag=n_off_diag,
                      shift=shift, image_shape=(1, 2, 2))
    return build_model(cfg).to(u_sq.dtype).energy(u_sq)


def torus_energy(u_sq, window):
    """v = W(u^2) as the 2-D model computes it, u_sq (B, S, C, D) with D a square number."""
    _, s, c, d = u_sq.shape
    cfg = ModelConfig(variant="tvae2d", n_caps=c, cap_dim=d, seq_len=s, torus_window=window, image_shape=(1, 2, 2))
    return build_model(cfg).to(u_sq.dtype).energy(u_sq)


def dense_operator(seq_len, cap_dim, k, n_off_diag, shift):
    """W as an explicit 0/1 matrix over (frame, position), straight from the spec's formula."""
    w = torch.zeros(seq_len * cap_dim, seq_len * cap_dim)
    if k % 2:
        deltas = range(-(k // 2), k // 2 + 1)
    else:
        deltas = range(-(k // 2), k // 2)
    for t in range(seq_len):
        for d in range(cap_dim):
            for delta in deltas:
                for e in range(-n_off_diag, n_off_diag + 1):
                    src = ((t + delta) % seq_len) * cap_dim + (d + shift * delta + e) % cap_dim
                    w[t * cap_dim + d, src] += 1
    return w


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("shift", [0, 1, 2])
@pytest.mark.parametrize("n_off_diag", [0, 1, 2])
def test_energy_matches_dense_operator(k, shift, n_off_diag, energy_form):
    b, s, c, d = 2, 7, 3, 9  # cap_dim != seq_len
    u_sq = torch.rand(b, s, c, d, dtype=torch.float64)
    w = dense_operator(s, d, k, n_off_diag, shift).double()
    flat = u_sq.permute(0, 2, 1, 3).reshape(b, c, s * d)  # (B, C, S*D)
    expected = (flat @ w.T).reshape(b, c, s, d).permute(0, 2, 1, 3)
    got = topographic_energy(u_sq, coherence_window=k, n_off_diag=n_off_diag, shift=shift)
    torch.testing.assert_close(got, expected)


def test_window_offsets_odd_and_even():
    assert list(window_offsets(5)) == [-2, -1, 0, 1, 2]
    assert list(window_offsets(4)) == [-2, -1, 0, 1]
    assert list(window_offsets(1)) == [0]


def test_energy_of_rolling_sequence_rolls_the_same_way(energy_form):
    s, d = 10, 10
    first = torch.rand(1, 1, 4, d)
    u_sq = torch.cat([torch.roll(first, t, dims=-1) for t in range(s)], dim=1)  # rolls one step per frame
    v = topographic_energy(u_sq, coherence_window=5, n_off_diag=1, shift=1)
    for t in range(s):
        torch.testing.assert_close(v[:, t], torch.roll(v[:, 0], t, dims=-1))
    # with the shift, the window adds aligned copies: v is k times the within-capsule sum alone
    within = topographic_energy(u_sq, coherence_window=1, n_off_diag=1, shift=1)
    torch.testing.assert_close(v, 5 * within)
    # stationary grouping smears the same input instead
    v0 = topographic_energy(u_sq, coherence_window=5, n_off_diag=1, shift=0)
    assert not torch.allclose(v0, 5 * within)


def test_torus_energy_is_a_box_sum(energy_form):
    side, window = 6, 3
    u_sq = torch.rand(2, 1, 1, side * side, dtype=torch.float64)
    got = torus_energy(u_sq, window).reshape(2, side, side)
    grid = u_sq.reshape(2, side, side)
    for i, j in [(0, 0), (2, 5), (5, 3)]:
        expected = sum(grid[:, (i + a) % side, (j + b) % side] for a in (-1, 0, 1) for b in (-1, 0, 1))
        torch.testing.assert_close(got[:, i, j], expected)


TINY = dict(n_caps=3, cap_dim=4, seq_len=4, coherence_window=3, n_off_diag=1, shift=1, mu_init=5.0,
            image_shape=(1, 6, 6))


@pytest.mark.parametrize("variant", ["vae", "tvae"])
def test_forward_shapes_and_finite_loss(variant):
    model = build_model(ModelConfig(variant=variant, **TINY))
    x = torch.rand(2, 4, 1, 6, 6)
    out = model(x)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.t.shape == (2, 4, 3, 4)
    assert out.logits.shape == x.shape
    torch.testing.assert_close(out.loss, out.recon_nll + out.kl)


def test_tvae2d_forward():
    cfg = ModelConfig(variant="tvae2d", n_caps=1, cap_dim=16, seq_len=1, torus_window=3, mu_init=10.0,
                      image_shape=(1, 6, 6))
    out = build_model(cfg)(torch.rand(5, 1, 1, 6, 6))
    assert out.t.shape == (5, 1, 1, 16) and torch.isfinite(out.loss)


def test_vae_latent_is_z():
    model = build_model(ModelConfig(variant="vae", **TINY))
    x = torch.rand(2, 4, 1, 6, 6)
    q = model.encode(x)
    torch.testing.assert_close(model.latent(q.z_mean, None), q.z_mean)
    assert q.u_mean is None


def test_full_size_model_parameter_count():
    model = build_model(ModelConfig())
    n = sum(p.numel() for p in model.parameters())
    assert 8e6 < n < 11e6, n


def test_one_sample_log_likelihood_is_an_elbo_sample():
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="tvae", **TINY)).double()
    x = torch.rand(3, 4, 1, 6, 6, dtype=torch.float64)
    torch.manual_seed(1)
    ll = model.log_likelihood(x, n_samples=1)
    torch.manual_seed(1)
    log_w = model.log_weights(x, n_samples=1)[0].sum(-1)  # a sequence's weight: its frames' sum
    torch.testing.assert_close(ll, log_w / 4)
    # averaged over many samples, an ELBO sample estimates minus the analytic loss
    torch.manual_seed(2)
    many = model.log_weights(x, n_samples=4000).sum(-1).mean() / 4
    with torch.no_grad():
        losses = torch.stack([model(x).loss for _ in range(400)])
    assert abs(float(many) + float(losses.mean())) < 0.02 * float(losses.mean())


def test_more_importance_samples_give_a_higher_bound_on_average():
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="tvae", **TINY))
    x = torch.rand(16, 4, 1, 6, 6)
    one = torch.stack([model.log_likelihood(x, n_samples=1) for _ in range(20)]).mean()
    ten = torch.stack([model.log_likelihood(x, n_samples=10) for _ in range(20)]).mean()
    assert ten > one


MEMBERS = {
    "tvae": [dict(TINY), dict(TINY, coherence_window=1, n_off_diag=0, shift=0, mu_init=2.0),
             dict(TINY, coherence_window=4, shift=2)],
    "vae": [dict(TINY, variant="vae"), dict(TINY, variant="vae", mu_init=1.0)],
    "tvae2d": [dict(TINY, variant="tvae2d", cap_dim=9, torus_window=3, mu_init=mu) for mu in (5.0, 2.0)],
}


@pytest.mark.parametrize("variant", list(MEMBERS))
def test_each_members_loss_is_its_own_models(variant, energy_form):
    """K members as one model: member m's loss is that of member m alone (its own W, mu and noise)."""
    members = [ModelConfig(**m) for m in MEMBERS[variant]]
    torch.manual_seed(0)
    model = TopographicVAE(members).double()
    x = torch.rand(len(members), 2, 4, 1, 6, 6, dtype=torch.float64)
    losses = model.member_losses(x, [torch.Generator().manual_seed(10 + m) for m in range(len(members))])
    assert losses.shape == (len(members),)
    for m in range(len(members)):
        torch.manual_seed(10 + m)  # the global RNG, seeded as member m's generator
        alone = model.member(m)(x[m]).loss
        torch.testing.assert_close(losses[m], alone)
    assert len(set(losses.tolist())) == len(members)


def test_a_member_state_is_in_a_single_runs_layout_and_loads_back():
    """A single run's checkpoint holds nn.Linear's layout, weights (out, in), mu a scalar."""
    cfg = ModelConfig(**TINY)
    model = TopographicVAE([cfg, ModelConfig(**dict(TINY, mu_init=1.0))])
    state = model.member_state(1)
    d, pixels = cfg.latent_dim, 36
    assert state["z_encoder.net.0.weight"].shape == torch.nn.Linear(pixels, 3 * d).weight.shape
    assert state["decoder.net.4.weight"].shape == (pixels, 3 * d) and state["decoder.net.4.bias"].shape == (pixels,)
    assert state["mu"].shape == () and float(state["mu"]) == 1.0
    single = build_model(cfg)
    single.load_member_states([state])
    torch.testing.assert_close(single.member_state(0), state)
    assert single.member(0) is single
    with pytest.raises(KeyError):
        single.load_member_states([{k: v for k, v in state.items() if k != "mu"}])


def test_a_model_of_members_refuses_a_single_runs_methods():
    model = TopographicVAE([ModelConfig(**TINY)] * 2)
    with pytest.raises(ValueError, match="a model of 2 members: take member"):
        model(torch.rand(2, 4, 1, 6, 6))
    assert model.member(1).k == 1


def test_a_shorter_sequence_than_the_config_is_encoded_with_its_own_w(energy_form):
    """Forecast pictures encode the first frames alone: W is made for the frames given."""
    model = build_model(ModelConfig(**TINY))
    b, s, c, d = 2, 3, 3, 4
    u_sq = torch.rand(b, s, c, d, dtype=torch.float64)
    w = dense_operator(s, d, TINY["coherence_window"], TINY["n_off_diag"], TINY["shift"]).double()
    expected = (u_sq.permute(0, 2, 1, 3).reshape(b, c, s * d) @ w.T).reshape(b, c, s, d).permute(0, 2, 1, 3)
    torch.testing.assert_close(model.double().energy(u_sq), expected)
