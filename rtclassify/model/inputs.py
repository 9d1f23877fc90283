"""Model inputs from a window: normalised voltage, dV/dt, and the real and imaginary FFT parts.

These are torch functions (constants passed in, as TorchScript cannot read module globals) so that they are scripted into the exported model: a client hands the
model a window in mV and cannot get the transforms wrong. Shapes use N = batch, L = window samples,
F = L // 2 + 1 frequency bins.
"""
import torch

# Fixed affine normalisation (stored in every model card). Fixed rather than fitted so that the
# absolute membrane potential, which differs between cell types, reaches the network unchanged.
V_OFFSET_MV = -40.0
V_SCALE_MV = 30.0
# dV/dt is expressed in mV/ms and divided by this; APs reach a few hundred mV/ms
DVDT_SCALE_MV_PER_MS = 100.0


def normalise_voltage(v_mv: torch.Tensor, offset_mv: float, scale_mv: float) -> torch.Tensor:
    """(N, L) mV -> (N, L) dimensionless, about unit scale (pass V_OFFSET_MV, V_SCALE_MV)."""
    return (v_mv - offset_mv) / scale_mv


def compute_dvdt(v_mv: torch.Tensor, fs_hz: float, scale_mv_per_ms: float) -> torch.Tensor:
    """(N, L) mV -> (N, L) dV/dt in mV/ms divided by scale_mv_per_ms (first difference, first value repeated)."""
    d = (v_mv[:, 1:] - v_mv[:, :-1]) * (fs_hz / 1000.0)
    d = torch.cat([d[:, :1], d], dim=1)
    return d / scale_mv_per_ms


def compute_spectrum(v_mv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) mV -> real and imaginary parts of the FFT of the mean-removed window, each (N, F).

    Scaled by 1/L so that the values are in mV and comparable across window lengths.
    """
    x = v_mv - v_mv.mean(dim=1, keepdim=True)
    spec = torch.fft.rfft(x, dim=1) / v_mv.shape[1]
    return spec.real, spec.imag


def describe_normalisation() -> dict:
    """The normalisation constants as stored in a model card."""
    return {
        "voltage": {"offset_mv": V_OFFSET_MV, "scale_mv": V_SCALE_MV},
        "dvdt": {"scale_mv_per_ms": DVDT_SCALE_MV_PER_MS},
        "fft": "rfft of the mean-removed window divided by its length (mV)",
    }
