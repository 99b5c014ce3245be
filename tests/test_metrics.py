import math

import pytest
import torch
import torch.nn.functional as F

from tvae_sweep.metrics import (
    active_units,
    base_metric,
    capsule_correlation,
    capsule_roll,
    equivariance_error,
    equivariance_ratio,
    has_map,
    input_free,
    learned,
    mean_controls,
    mean_image_nll,
    metric_mode,
    permute_frames,
    preferred_classes,
    reported_metrics,
    roll_gain,
    topographic_agreement,
)
from tvae_sweep.model import ModelConfig, build_model
from tvae_sweep.training import Trainer


def rolling_latents(b=4, s=18, c=18, d=18, shift=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(b, 1, c, d, generator=g)
    return torch.cat([torch.roll(first, shift * f, dims=-1) for f in range(s)], dim=1)


def test_equivariance_error_is_zero_for_rolling_latents():
    for shift in (1, 2):
        t = rolling_latents(shift=shift)
        assert torch.allclose(equivariance_error(t, shift=shift), torch.zeros(4), atol=1e-3)
        assert equivariance_error(t, shift=shift + 1).min() > 100  # the wrong shift is penalised


def test_equivariance_error_with_cap_dim_different_from_seq_len():
    t = rolling_latents(s=7, d=11)
    assert equivariance_error(t, shift=1).abs().max() < 1e-4
    assert equivariance_error(t, shift=0).min() > 1


def test_equivariance_error_of_random_latents_is_the_chance_value():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(400, 18, 18, 18, generator=g)
    mean = float(equivariance_error(t, shift=1).mean())
    assert abs(mean - 13270) / 13270 < 0.02, mean


def test_equivariance_error_matches_a_plain_pairwise_loop():
    t = torch.randn(2, 5, 3, 6)
    t_hat = t / t.norm(dim=-1, keepdim=True)
    expected = torch.zeros(2)
    for k in range(5):
        for m in range(k + 1, 5):
            expected += (torch.roll(t_hat[:, k], 2 * (m - k), dims=-1) - t_hat[:, m]).abs().sum(dim=(1, 2))
    torch.testing.assert_close(equivariance_error(t, shift=2), expected)


def test_equivariance_ratio_separates_rolling_from_invariant_codes():
    g = torch.Generator().manual_seed(1)
    rolling = rolling_latents(b=32)
    assert float(equivariance_ratio(rolling, shift=1, generator=g)) < 0.01
    # a code that does not change along the sequence scores the same whatever the frame order
    invariant = torch.randn(32, 1, 18, 18).expand(32, 18, 18, 18)
    assert abs(float(equivariance_ratio(invariant, shift=1, generator=g)) - 1.0) < 1e-4


def test_permute_frames_permutes_within_each_sequence():
    t = torch.arange(3 * 6, dtype=torch.float32).reshape(3, 6, 1, 1)
    p = permute_frames(t, torch.Generator().manual_seed(0))
    for b in range(3):
        assert sorted(p[b].flatten().tolist()) == t[b].flatten().tolist()
    assert not torch.equal(p, t)


def test_capsule_roll_finds_the_roll():
    a = torch.randn(5, 3, 12)
    for r in (0, 1, 7):
        assert torch.equal(capsule_roll(a, torch.roll(a, r, dims=-1)), torch.full((5, 3), r))


def test_capsule_correlation_is_one_for_a_rolling_code_and_low_for_noise():
    n_values, b = 15, 60
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, n_values, (b,), generator=g)
    factor = torch.randint(0, 2, (b,), generator=g)
    t = rolling_latents(b=b, s=15, c=4, d=15)
    out = capsule_correlation(t, factor, start, [n_values, n_values], ["x", "y"])
    assert out["capsule_correlation_x"] > 0.99 and out["capsule_correlation_y"] > 0.99
    noise = torch.randn(b, 15, 4, 15, generator=g)
    out = capsule_correlation(noise, factor, start, [n_values, n_values], ["x", "y"])
    assert abs(out["capsule_correlation"]) < 0.5


def test_preferred_classes_find_the_unit_each_class_drives():
    # 9 units on a 3x3 grid; images of class k drive unit k (and every image a little of every unit)
    labels = torch.arange(90) % 9
    t = 0.1 * torch.ones(90, 1, 1, 9)
    t[torch.arange(90), 0, 0, labels] = 5.0
    preferred = preferred_classes(t, labels, n_classes=9)
    assert preferred.shape == (3, 3)
    assert preferred.flatten().tolist() == list(range(9))


def test_topographic_agreement_counts_neighbours_on_the_torus():
    uniform = torch.zeros(4, 4, dtype=torch.long)
    assert topographic_agreement(uniform) == (1.0, 1.0)
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2  # no neighbour agrees
    observed, chance = topographic_agreement(checker)
    assert observed == 0.0
    assert abs(chance - 7 / 15) < 1e-12  # 8 units of each class: pairs of the same class 2*8*7 / (16*15)
    halves = torch.zeros(4, 4, dtype=torch.long)
    halves[2:] = 1  # two bands: only the 8 vertical pairs across the two borders disagree
    assert topographic_agreement(halves)[0] == 24 / 32


def test_has_map_needs_a_static_square_latent():
    assert has_map(1, 324, 1) and has_map(4, 4, 1)
    assert not has_map(1, 10, 1) and not has_map(18, 18, 18)


# ---------------------------------------------------------------- roll gain, latent use, the mean image


def bernoulli_nll(logits, x):
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(2).sum(-1)


def one_hot_sequences(b=5, s=8, d=8, seed=0):
    """Images that are one-hot rows of D pixels moving one pixel per frame, and a code that rolls
    exactly with them: t_f = the image itself (one capsule of D positions)."""
    start = torch.randint(d, (b,), generator=torch.Generator().manual_seed(seed))
    pos = (start[:, None] + torch.arange(s)) % d
    x = F.one_hot(pos, d).float().view(b, s, 1, 1, d)
    return x, x.view(b, s, 1, d).clone()


def test_roll_gain_is_zero_for_a_decoder_that_ignores_its_latent():
    x, t = one_hot_sequences()

    def ignores(latent):
        return torch.zeros(*latent.shape[:2], 1, 1, 8)

    for shift in (1, -1):  # roll gain and its reversed control
        assert torch.equal(roll_gain(ignores, bernoulli_nll, t, x, shift=shift), torch.zeros(5))


def test_a_code_that_rolls_exactly_has_a_ratio_near_0_and_a_positive_roll_gain():
    x, t = one_hot_sequences()

    def reads(latent):  # decodes t as the image
        return 10.0 * (2 * latent - 1).view(*latent.shape[:2], 1, 1, 8)

    gain = roll_gain(reads, bernoulli_nll, t, x, shift=1)
    assert (gain > 10).all()  # the roll predicts each later frame; a copy misses two pixels of it
    noise = 0.01 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0))  # seeded: the ratio is
    # about 0.045 over noise draws, so an unseeded draw could cross the bound
    assert float(equivariance_ratio(t + noise, shift=1, generator=torch.Generator().manual_seed(0))) < 0.05
    # rolled the wrong way, only the pairs half a cycle apart are predicted
    assert (roll_gain(reads, bernoulli_nll, t, x, shift=-1) < gain / 4).all()


def test_mean_image_nll_is_the_nll_of_the_mean_image():
    x = torch.rand(50, 3, 4, 4, generator=torch.Generator().manual_seed(0)).round()
    mean = x.mean(0)
    direct = F.binary_cross_entropy(mean.clamp(1e-7, 1 - 1e-7).expand_as(x), x,
                                    reduction="none").flatten(1).sum(1).mean()
    assert mean_image_nll(mean) == pytest.approx(float(direct), rel=1e-5)
    assert mean_image_nll(torch.ones(3, 4, 4)) < 1e-4  # a constant data set costs nothing


def test_active_units_count_the_units_whose_mean_moves():
    g = torch.Generator().manual_seed(0)
    means = torch.cat([torch.randn(400, 3, generator=g), 0.01 * torch.randn(400, 2, generator=g)], 1)
    assert active_units(means.sum(0), (means * means).sum(0), 400) == 3
    still = torch.full((400, 4), 2.0)
    assert active_units(still.sum(0), (still * still).sum(0), 400) == 0


# ---------------------------------------------------------------- stationary models and the model at initialisation


def tiny_run(tiny_config, **model):
    return tiny_config(model={"n_caps": 2, "cap_dim": 6, "seq_len": 6, **model}, data={"test_sequences": 16})


def test_stationary_models_are_measured_against_a_roll_of_1(tiny_config):
    for model in ({"shift": 0, "coherence_window": 3}, {"shift": 0, "coherence_window": 1}, {"variant": "vae"}):
        trainer = Trainer(tiny_run(tiny_config, **model))
        assert trainer.model.metric_shift == 1
        ratio = trainer.evaluate(likelihood=False)["equivariance_ratio"]
        assert abs(ratio - 1) > 1e-4, model  # not 1 by construction, as an unrolled E_eq would be


def test_a_whole_window_tvae_rolls_by_construction_at_initialisation(tiny_config):
    """k = S: v rolls exactly with the frames whatever u is, and mu = 30 dominates z (TVAE-SPEC 3.1)."""
    whole = Trainer(tiny_run(tiny_config, coherence_window=6)).evaluate(likelihood=False)
    vae = Trainer(tiny_run(tiny_config, variant="vae")).evaluate(likelihood=False)
    assert whole["equivariance_ratio"] < 0.5
    assert vae["equivariance_ratio"] > 0.9


def test_log_likelihood_per_frame_is_the_original_estimator():
    torch.manual_seed(0)
    model = build_model(tiny_model_config()).double()
    x = torch.rand(3, 4, 1, 6, 6, dtype=torch.float64)
    torch.manual_seed(1)
    ours, per_frame = model.log_likelihoods(x, n_samples=5)
    torch.manual_seed(1)
    log_w = model.log_weights(x, n_samples=5)  # (N, B, S)
    torch.testing.assert_close(per_frame, torch.logsumexp(log_w, 0).mean(-1))
    torch.testing.assert_close(ours, (torch.logsumexp(log_w.sum(-1), 0) - math.log(5)) / 4)
    assert (per_frame > ours).all()  # per frame and without - log N it reads higher


def tiny_model_config():
    return ModelConfig(variant="tvae", n_caps=2, cap_dim=4, seq_len=4, coherence_window=3, n_off_diag=1,
                       image_shape=(1, 6, 6))


# ---------------------------------------------------------------- the registry


def test_every_reported_name_has_a_direction_and_derived_names_follow_their_metric():
    assert metric_mode("equivariance_ratio_init") == "min" and metric_mode("equivariance_ratio_learned") == "min"
    assert metric_mode("roll_gain_learned") == "max" and metric_mode("capsule_correlation_hue_init") == "max"
    assert base_metric("log_likelihood_init") is None  # the likelihood is not measured at initialisation
    assert base_metric("train_time_s") is None
    with pytest.raises(KeyError):
        metric_mode("accuracy")
    assert learned({"roll_gain": 2.0}, {"roll_gain": 0.5}) == {"roll_gain_init": 0.5, "roll_gain_learned": 1.5}


def test_the_registry_lists_what_a_trainer_reports_and_nothing_it_does_not(tiny_config):
    for model in ({}, {"variant": "vae"}):
        cfg = tiny_config(model={"n_caps": 2, "cap_dim": 18, "seq_len": 18, "coherence_window": 5, **model},
                          data={"test_sequences": 24}, train={"epochs": 1})
        ((final,),) = list(Trainer(cfg).epochs())
        reported = {k for k in final if base_metric(k) is not None}
        assert reported == set(reported_metrics(cfg)), model
        controls = ["equivariance_error_at_mean", "equivariance_ratio_at_mean", "roll_gain_reversed"]
        if not model:
            controls.append("equivariance_ratio_input_free")
        for name in controls:  # the controls, with their value at initialisation and what training added
            assert all(math.isfinite(final[name + suffix]) for suffix in ("", "_init", "_learned")), name
            assert final[name + "_learned"] == pytest.approx(final[name] - final[name + "_init"]), name
    assert "kl_u" not in final and "active_units_u" not in final  # the VAE has no u: absent, not 0
    assert not any(k.startswith("equivariance_ratio_input_free") for k in final)  # nor a u to take from other frames


# ---------------------------------------------------------------- controls: what the encoder learned, apart from W


def control_model(window=3, seq_len=8, cap_dim=8):
    """A TVAE's t = (z + mu) / sqrt(W(u^2)): what the controls build from posterior means."""
    torch.manual_seed(0)
    return build_model(ModelConfig(variant="tvae", n_caps=4, cap_dim=cap_dim, seq_len=seq_len,
                                   coherence_window=window, n_off_diag=1, shift=1, image_shape=(1, 4, 4)))


def controls(u, window=3, z=None, draw_seed=4):
    model = control_model(window, u.shape[1], u.shape[-1])
    return mean_controls(model.latent, torch.zeros_like(u) if z is None else z, u, 1, 3, draw_seed)


def test_input_free_gives_every_frame_the_u_of_another_frame_of_the_set():
    u = torch.arange(6 * 4, dtype=torch.float32).reshape(6, 4, 1, 1).expand(6, 4, 2, 3)
    free = input_free(u, torch.Generator().manual_seed(0))
    assert sorted(free[:, :, 0, 0].flatten().tolist()) == list(range(24))  # each frame's u once
    assert (free == free[:, :, :1, :1]).all()  # a frame's u moves whole
    assert (free[:, :, 0, 0] // 4 != torch.arange(6)[:, None]).float().mean() > 0.5  # mostly another sequence's
    assert torch.equal(free, input_free(u, torch.Generator().manual_seed(0)))  # one permutation per seed


def test_an_exactly_rolling_code_is_far_more_equivariant_than_its_input_free_control():
    u = rolling_latents(b=64, s=8, c=4, d=8)  # u's means roll with the frames: the encoder follows the input
    out = controls(u)
    assert out["equivariance_error_at_mean"] < 1e-2 and out["equivariance_ratio_at_mean"] < 1e-3
    assert out["equivariance_ratio_input_free"] > 0.5  # without the input, W with window 3 does not roll


def test_a_code_that_ignores_its_input_scores_its_control_exactly():
    g = torch.Generator().manual_seed(2)
    u = torch.randn(1, 1, 4, 8, generator=g).expand(64, 8, 4, 8)  # the same means for every frame of every input
    z = torch.randn(1, 1, 4, 8, generator=g).expand(64, 8, 4, 8)
    out = controls(u, z=z)
    assert out["equivariance_ratio_input_free"] == out["equivariance_ratio_at_mean"]


def test_the_input_free_ratio_moves_with_w_and_not_with_the_input_dependence_of_u():
    g = torch.Generator().manual_seed(1)
    rolling = rolling_latents(b=128, s=8, c=4, d=8)
    scrambled = input_free(rolling, g)  # the same u values, tied to no input
    following, ignoring = controls(rolling), controls(scrambled)
    # at the mean, what the encoder follows moves the figures
    assert ignoring["equivariance_ratio_at_mean"] - following["equivariance_ratio_at_mean"] > 0.5
    assert ignoring["equivariance_error_at_mean"] > 1000 * following["equivariance_error_at_mean"]
    assert abs(ignoring["equivariance_ratio_input_free"] - following["equivariance_ratio_input_free"]) < 0.03
    # a window over the whole sequence rolls v whatever u is: the input-free ratio falls with W alone
    whole = controls(scrambled, window=8)
    assert whole["equivariance_ratio_input_free"] < 0.01 and ignoring["equivariance_ratio_input_free"] > 0.5
    assert controls(rolling, draw_seed=5)["equivariance_ratio_input_free"] != following["equivariance_ratio_input_free"]


def test_the_vae_has_no_input_free_control():
    t = rolling_latents(b=8, s=6, c=2, d=6)
    out = mean_controls(lambda z, u: z, t, None, 1, 3, 4)
    assert set(out) == {"equivariance_error_at_mean", "equivariance_ratio_at_mean"}
    assert out["equivariance_ratio_at_mean"] < 1e-3  # t = z's mean, which rolls


def reads(latent):  # decodes t as the image: one capsule of 8 positions, 8 pixels
    return 10.0 * (2 * latent - 1).view(*latent.shape[:2], 1, 1, 8)


def test_a_decoder_that_learned_the_direction_gains_far_more_than_reversed():
    x, t = one_hot_sequences()
    gain = roll_gain(reads, bernoulli_nll, t, x, shift=1)
    reversed_gain = roll_gain(reads, bernoulli_nll, t, x, shift=-1)
    assert (gain > 10).all() and (reversed_gain < gain / 4).all()
    # the same sequences played backwards: the transformation turns, and the two gains swap
    back_x, back_t = x.flip(1), t.flip(1)
    torch.testing.assert_close(roll_gain(reads, bernoulli_nll, back_t, back_x, shift=-1), gain)
    torch.testing.assert_close(roll_gain(reads, bernoulli_nll, back_t, back_x, shift=1), reversed_gain)


def test_a_code_symmetric_in_direction_gains_alike_both_ways():
    """Two dots moving apart from a centre: rolling one way predicts one dot, the other way the
    other; what W's symmetry alone gives a roll."""
    b, s, d = 5, 4, 8
    centre = torch.randint(d, (b,), generator=torch.Generator().manual_seed(0))
    steps = torch.arange(s)
    x = (F.one_hot((centre[:, None] + steps) % d, d) + F.one_hot((centre[:, None] - steps) % d, d)).clamp(max=1)
    x = x.float().view(b, s, 1, 1, d)
    t = x.view(b, s, 1, d).clone()
    gain = roll_gain(reads, bernoulli_nll, t, x, shift=1)
    torch.testing.assert_close(roll_gain(reads, bernoulli_nll, t, x, shift=-1), gain)
    assert (gain.abs() > 1).all()  # alike, and not because both are 0


def test_the_controls_at_the_mean_do_not_move_with_the_posterior_variances(tiny_config):
    trainer = Trainer(tiny_run(tiny_config))
    before = trainer.evaluate(likelihood=False)
    assert before == trainer.evaluate(likelihood=False)  # seeded: a repeated evaluation gives the same numbers
    with torch.no_grad():
        for encoder in (trainer.model.z_encoder, trainer.model.u_encoder):
            bias = encoder.net[-1].bias
            bias[:, bias.shape[1] // 2:] += 4.0  # the log-variances: wider posteriors, the same means
    after = trainer.evaluate(likelihood=False)
    for name in ("equivariance_error_at_mean", "equivariance_ratio_at_mean", "equivariance_ratio_input_free"):
        assert after[name] == pytest.approx(before[name], rel=1e-5), name
    assert abs(after["equivariance_ratio"] - before["equivariance_ratio"]) > 1e-3  # the sampled ratio moves
