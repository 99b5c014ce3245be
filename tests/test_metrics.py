import torch

from tvae_sweep.metrics import (
    capsule_correlation,
    capsule_roll,
    equivariance_error,
    equivariance_ratio,
    has_map,
    permute_frames,
    preferred_classes,
    topographic_agreement,
)


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
    for l in range(5):
        for m in range(l + 1, 5):
            expected += (torch.roll(t_hat[:, l], 2 * (m - l), dims=-1) - t_hat[:, m]).abs().sum(dim=(1, 2))
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
