"""Reading a recording from an .npz file holding arrays `v` (membrane potential) and `i` (command)."""
import numpy as np

from rtclassify.units import to_mv, to_pa


def read_npz_recording(path, v_units: str | None = None, i_units: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(v in mV, i in pA), both (n,) float64; units detected when not given.

    Raises ValueError naming what is wrong (missing arrays, shapes, NaN/Inf).
    """
    try:
        z = np.load(path, allow_pickle=False)
    except OSError:
        raise
    except Exception:  # numpy's own message would advise allowing pickles
        z = None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an .npz archive; expected an .npz file holding arrays v (membrane "
                         "potential) and i (command current) (NWB files: `rtclassify sweeps`, "
                         "`serve --source file --replay FILE.nwb`)")
    with z:
        missing = [k for k in ("v", "i") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: no array {missing} (found {z.files}); need v and i")
        v, i = to_mv(z["v"], v_units), to_pa(z["i"], i_units)
    if v.ndim != 1 or v.shape != i.shape:
        raise ValueError(f"v {v.shape} and i {i.shape} must be 1-D and of equal length")
    if not (np.isfinite(v).all() and np.isfinite(i).all()):
        raise ValueError("NaN or Inf samples in v or i")
    return v, i
