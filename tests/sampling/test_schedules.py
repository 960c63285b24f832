import pytest
import torch

from magihuman.sampling import (
    SR_NOISE_INDEX,
    flow_sigmas,
    flow_timesteps,
    sigma_to_timestep,
    sr_noise_sigma,
    zero_snr_ddpm_sigmas,
)

TOL = 1e-5


def _parse_key(key: str) -> tuple[int, float]:
    fields = dict(part.split("=") for part in key.split(","))
    return int(fields["steps"]), float(fields["shift"])


@pytest.mark.golden
def test_flow_schedules_match_golden(golden_schedules):
    entries = golden_schedules["flow_unipc"]
    assert entries
    for key, ref in entries.items():
        steps, shift = _parse_key(key)
        sigmas = flow_sigmas(steps, shift)
        err = (sigmas - torch.tensor(ref["sigmas"], dtype=torch.float64)).abs().max().item()
        assert err <= TOL, (key, err)
        assert flow_timesteps(sigmas).tolist() == ref["timesteps"], key


@pytest.mark.golden
def test_zero_snr_table_matches_golden(golden_schedules):
    ref = torch.tensor(golden_schedules["zero_snr_ddpm_sigmas_1000_flipped"], dtype=torch.float64)
    table = zero_snr_ddpm_sigmas().double()
    assert table.shape == ref.shape == (1000,)
    assert (table - ref).abs().max().item() <= TOL
    assert golden_schedules["sr_noise_index"] == SR_NOISE_INDEX
    assert abs(sr_noise_sigma(golden_schedules["sr_noise_index"]) - golden_schedules["sr_noise_sigma"]) <= TOL


@pytest.mark.golden
def test_every_golden_schedule_key_is_checked(golden_schedules):
    assert set(golden_schedules) <= {
        "flow_unipc",
        "zero_snr_ddpm_sigmas_1000_flipped",
        "sr_noise_index",
        "sr_noise_sigma",
    }, "new golden schedule entries need a test"


def test_flow_sigma_properties():
    s = flow_sigmas(8, 5.0)
    assert s.dtype == torch.float64 and len(s) == 9
    assert s[-1] == 0 and bool((s[:-1] > s[1:]).all())
    assert torch.allclose(flow_sigmas(8, 1.0)[:-1], torch.linspace(0.999, 0, 9, dtype=torch.float64)[:-1], atol=1e-7)
    assert sigma_to_timestep(0.4999) == 499


def test_zero_snr_table_properties():
    z = zero_snr_ddpm_sigmas()
    assert z[-1] == 0 and bool((z[:-1] > z[1:]).all())
    assert 0.999 < z[0] < 1
    assert abs(sr_noise_sigma() - 0.8389104) < 1e-6
