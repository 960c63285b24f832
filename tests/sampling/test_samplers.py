import re

import pytest
import torch

from magihuman.sampling import (
    SAMPLERS,
    FixedAudio,
    ImageFirstFrame,
    SamplerConfig,
    flow_sigmas,
    sample,
    sample_dmd,
    sample_sde,
    sample_unipc,
    sde_noise_theta,
    sigma_to_timestep,
)

TOL = 1e-5
ALL = [sample_unipc, sample_dmd, sample_sde]


def toy_denoise(A: torch.Tensor, b: torch.Tensor):
    """The golden toy model `v(x, t) = x @ A.T + b * (t / 1000)` with the integer timestep t = int(sigma * 1000)."""

    def denoise(video, audio, sigma):
        t = torch.tensor(sigma_to_timestep(sigma))
        return video @ A.T + b * (t / 1000), torch.zeros_like(audio)

    return denoise


def point_oracle(video_star: torch.Tensor, audio_star: torch.Tensor):
    """Exact flow velocity when the data is the single point x*: v = (x - x*) / sigma."""

    def denoise(video, audio, sigma):
        return (video - video_star) / sigma, (audio - audio_star) / sigma

    return denoise


def _golden_steps(golden, prefix):
    steps = sorted(int(m.group(1)) for k in golden if (m := re.fullmatch(rf"{prefix}_steps=(\d+)", k)))
    assert steps, f"no {prefix} trajectories in the golden file"
    return steps


@pytest.mark.golden
def test_golden_file_has_no_unchecked_entries(golden_samplers):
    known = re.compile(r"A|b|x_init|(unipc|dmd)_steps=\d+|dmd_steps=\d+\.noise")
    assert all(known.fullmatch(k) for k in golden_samplers), sorted(golden_samplers)


@pytest.mark.golden
def test_unipc_matches_golden(golden_samplers):
    g = golden_samplers
    for n in _golden_steps(g, "unipc"):
        ref = g[f"unipc_steps={n}"]
        sigmas = flow_sigmas(n, 5.0)
        seen = []  # the input of denoiser call i is state i
        base = toy_denoise(g["A"], g["b"])

        def recording(video, audio, sigma):
            seen.append(video)
            return base(video, audio, sigma)

        final, _ = sample_unipc(recording, g["x_init"].clone(), g["x_init"].new_zeros(1, 0), sigmas, progress=False)
        states = torch.stack([*seen, final])
        err = (states - ref).abs().max().item()
        assert err <= TOL, (n, err)


@pytest.mark.golden
def test_dmd_matches_golden(golden_samplers):
    g = golden_samplers
    for n in _golden_steps(g, "dmd"):
        ref, stored = g[f"dmd_steps={n}"], iter(g[f"dmd_steps={n}.noise"])
        seen = []
        base = toy_denoise(g["A"], g["b"])

        def recording(video, audio, sigma):
            seen.append(video)
            return base(video, audio, sigma)

        def noise(like):  # stored per-step noises drive the video stream; the audio stream is an empty placeholder
            return next(stored) if like.numel() else torch.empty_like(like)

        final, _ = sample_dmd(
            recording, g["x_init"].clone(), g["x_init"].new_zeros(1, 0), flow_sigmas(n, 5.0), noise=noise, progress=False
        )
        err = (torch.stack([*seen, final]) - ref).abs().max().item()
        assert err <= TOL, (n, err)


@pytest.mark.parametrize("sampler", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("steps", [1, 5, 8])
def test_point_oracle_lands_on_the_point(sampler, steps):
    gen = torch.Generator().manual_seed(0)
    v_star, a_star = torch.randn(1, 4, 3, 5, 6, generator=gen), torch.randn(1, 7, 8, generator=gen)
    video, audio = torch.randn(v_star.shape, generator=gen), torch.randn(a_star.shape, generator=gen)
    kwargs = {} if sampler is sample_unipc else {"generator": gen}
    out_v, out_a = sampler(point_oracle(v_star, a_star), video, audio, flow_sigmas(steps, 5.0), progress=False, **kwargs)
    assert torch.allclose(out_v, v_star, atol=1e-5, rtol=0)
    assert torch.allclose(out_a, a_star, atol=1e-5, rtol=0)


def test_unipc_follows_the_straight_oracle_path():
    """For a single data point the exact flow path is a straight line x* + sigma / sigma_0 * (x_0 - x*)."""
    gen = torch.Generator().manual_seed(1)
    x_star, x0 = torch.randn(2, 3, 8, generator=gen), torch.randn(2, 3, 8, generator=gen)
    sigmas = flow_sigmas(6, 5.0)
    seen = []

    def denoise(video, audio, sigma):
        seen.append(video)
        return (video - x_star) / sigma, torch.zeros_like(audio)

    sample_unipc(denoise, x0, x0.new_zeros(1, 0), sigmas, progress=False)
    for s, state in zip(sigmas.tolist(), seen):
        assert torch.allclose(state, x_star + s / sigmas[0].item() * (x0 - x_star), atol=1e-5)


@pytest.mark.parametrize("sampler", [sample_dmd, sample_sde], ids=lambda f: f.__name__)
def test_seeding(sampler):
    A = torch.eye(4) * 0.3
    denoise = toy_denoise(A, torch.ones(4))
    video, audio, sigmas = torch.ones(2, 3, 4), torch.ones(1, 5, 4), flow_sigmas(6, 5.0)

    def run(seed):
        return sampler(denoise, video, audio, sigmas, generator=torch.Generator().manual_seed(seed), progress=False)

    (v0, a0), (v1, a1), (v2, a2) = run(0), run(0), run(1)
    assert torch.equal(v0, v1) and torch.equal(a0, a1)
    assert not torch.allclose(v0, v2) and not torch.allclose(a0, a2)


def test_sde_theta_schedule():
    assert [sde_noise_theta(i, 8) for i in range(8)] == [0, 1, 0, 1, 0, 1, 1, 0]
    assert [sde_noise_theta(i, 4) for i in range(4)] == [0, 1, 0, 1]


def test_sde_steps_alternate_euler_and_renoise():
    """theta=0 steps are Euler `x + (s' - s) v`; theta=1 steps are `(1 - s') x0 + s' eps`."""
    A, b = torch.eye(4) * 0.5, torch.linspace(-1, 1, 4)
    denoise = toy_denoise(A, b)
    sigmas, x = flow_sigmas(4, 5.0), torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    eps = 0.25

    out, _ = sample_sde(denoise, x, x.new_zeros(1, 0), sigmas, noise=lambda like: torch.full_like(like, eps), progress=False)
    for i in range(4):
        s, s_next = sigmas[i].float(), sigmas[i + 1].float()
        v, _ = denoise(x, x.new_zeros(1, 0), sigmas[i].item())
        x = x + (s_next - s) * v if sde_noise_theta(i, 4) == 0 else (1 - s_next) * (x - s * v) + s_next * eps
    assert torch.allclose(out, x, atol=1e-6)


@pytest.mark.parametrize("sampler", ALL, ids=lambda f: f.__name__)
def test_ti2v_first_frame_is_the_image(sampler):
    gen = torch.Generator().manual_seed(3)
    image = torch.randn(1, 4, 1, 3, 5, generator=gen)
    video, audio = torch.randn(1, 4, 6, 3, 5, generator=gen), torch.randn(1, 7, 8, generator=gen)
    seen = []

    def denoise(v, a, sigma):
        seen.append(v[:, :, :1].clone())
        return v * 0.5 + 0.1, a * 0.5

    kwargs = {} if sampler is sample_unipc else {"generator": gen}
    out, _ = sampler(denoise, video, audio, flow_sigmas(4, 5.0), constraints=[ImageFirstFrame(image)], progress=False, **kwargs)
    assert torch.equal(out[:, :, :1], image)
    assert all(torch.equal(f, image) for f in seen)
    assert not torch.equal(out[:, :, 1:], video[:, :, 1:])


@pytest.mark.parametrize("sampler", ALL, ids=lambda f: f.__name__)
def test_a2v_audio_is_bit_unchanged(sampler):
    gen = torch.Generator().manual_seed(4)
    video, audio = torch.randn(1, 4, 3, 2, 2, generator=gen), torch.randn(1, 9, 8, generator=gen)
    given = audio.clone()
    seen = []

    def denoise(v, a, sigma):
        seen.append(a)
        return v * 0.5, a * 0.5 + 1.0

    kwargs = {} if sampler is sample_unipc else {"generator": gen}
    _, out = sampler(denoise, video, audio, flow_sigmas(5, 5.0), constraints=[FixedAudio(audio)], progress=False, **kwargs)
    assert torch.equal(out, given) and torch.equal(audio, given)
    assert all(torch.equal(a, given) for a in seen)


def test_constraints_compose():
    image, fixed = torch.zeros(1, 2, 1, 2, 2), torch.ones(1, 3, 4)
    denoise = point_oracle(torch.full((1, 2, 3, 2, 2), 5.0), torch.full((1, 3, 4), 5.0))
    v, a = sample_unipc(
        denoise,
        torch.randn(1, 2, 3, 2, 2),
        torch.randn(1, 3, 4),
        flow_sigmas(3, 5.0),
        constraints=[ImageFirstFrame(image), FixedAudio(fixed)],
        progress=False,
    )
    assert torch.equal(v[:, :, :1], image) and torch.equal(a, fixed)
    assert torch.allclose(v[:, :, 1:], torch.full_like(v[:, :, 1:], 5.0), atol=1e-5)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_dispatcher_matches_direct_call(name):
    config = SamplerConfig(name=name, num_steps=5, shift=5.0, progress=False)
    denoise = toy_denoise(torch.eye(4) * 0.2, torch.ones(4))
    video, audio = torch.randn(2, 3, 4), torch.randn(1, 2, 4)
    kwargs = {} if name == "unipc_cfg" else {"generator": torch.Generator().manual_seed(7)}
    direct = SAMPLERS[name](denoise, video, audio, flow_sigmas(5, 5.0), progress=False, **kwargs)
    via = sample(config, denoise, video, audio, generator=torch.Generator().manual_seed(7))
    assert torch.equal(direct[0], via[0]) and torch.equal(direct[1], via[1])


def test_config_validation():
    with pytest.raises(ValueError):
        SamplerConfig(name="euler")
    with pytest.raises(ValueError):
        SamplerConfig(cfg_passes=3)
    with pytest.raises(ValueError):
        SamplerConfig(num_steps=0)


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 32])
@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_unipc_is_diffusers_bit_for_bit(steps, shift):
    """Our host-side UniPC arithmetic reproduces diffusers' scheduler exactly (same flow settings)."""
    from diffusers import UniPCMultistepScheduler

    sigmas = flow_sigmas(steps, shift)
    weight = torch.randn(32, 32, generator=torch.Generator().manual_seed(0)) / 6
    x0 = torch.randn(2, 32, generator=torch.Generator().manual_seed(steps))

    def velocity(x, i):
        return torch.tanh(x @ weight) + 0.1 * i

    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
                                    solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
                                    final_sigmas_type="zero")  # fmt: skip
    sched.set_timesteps(sigmas=sigmas[:-1].numpy())
    sched.set_begin_index(0)
    expected = x0.clone()
    for i in range(steps):
        expected = sched.step(velocity(expected, i), int(float(sigmas[i]) * 1000), expected, return_dict=False)[0]
    calls = iter(range(steps))
    ours, _ = sample_unipc(lambda v, a, s: (velocity(v, next(calls)), a), x0.clone(), x0.new_zeros(1, 0), sigmas,
                           progress=False)  # fmt: skip
    assert torch.equal(ours, expected)
