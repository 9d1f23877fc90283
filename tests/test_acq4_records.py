"""The host-independent half of the ACQ4 module: ACQ4-shaped clamp records -> sweeps -> the real daemon."""
import numpy as np
import pytest

from helpers import ForwarderAndDaemon, spike_sweep
from plugins.acq4_records import Acq4Settings, RecordError, sweep_from_record


def acq4_record(v_mv, i_pa, fs, mode="IC"):
    """(data, info) laid out as ACQ4's MultiClamp task result: rows command (A) and primary (V)."""
    data = np.stack([i_pa * 1e-12, v_mv * 1e-3])
    n = data.shape[1]
    info = [{"name": "Channel", "cols": [{"name": "command", "units": "A"}, {"name": "primary", "units": "V"}]},
            {"name": "Time", "units": "s", "values": np.arange(n) / fs},
            {"ClampState": {"mode": mode}, "DAQ": {"primary": {"rate": fs, "numPts": n},
                                                   "command": {"rate": fs, "numPts": n, "holding": 0.0}}}]
    return data, info


def test_record_becomes_a_sweep_in_mv_and_pa():
    v, i = spike_sweep(fs=50_000.0, n=2000, onset=500)
    sweep = sweep_from_record(*acq4_record(v, i, 50_000.0), "Clamp1")
    assert sweep.fs == 50_000.0
    assert np.allclose(sweep.v_mv, v) and np.allclose(sweep.i_pa, i)


@pytest.mark.parametrize("change, message", [
    (lambda d, info: info[-1]["ClampState"].update(mode="VC"), "clamp mode 'VC'"),
    (lambda d, info: info[0]["cols"].pop(1), "lacks rows \\['primary'\\]"),
    (lambda d, info: info[-1]["DAQ"]["primary"].pop("rate"), "no sampling rate"),
    (lambda d, info: info[0]["cols"][1].update(units="A"), "'primary' is in 'A'"),
])
def test_unusable_records_are_refused_with_the_reason(change, message):
    v, i = spike_sweep()
    data, info = acq4_record(v, i, 50_000.0)
    change(data, info)
    with pytest.raises(RecordError, match=message):
        sweep_from_record(data, info, "Clamp1")


def test_settings_name_the_bad_field():
    assert Acq4Settings.from_config({"devices": {"Clamp1": 0, "Clamp2": 1}}).devices["Clamp2"] == 1
    with pytest.raises(ValueError, match="headstage numbers"):
        Acq4Settings.from_config({"devices": {"Clamp1": "zero"}})
    with pytest.raises(ValueError):
        Acq4Settings.from_config({"no_such_option": 1})


@pytest.mark.slow
def test_acq4_records_reach_the_daemon_and_are_answered():
    """What the ACQ4 module does per task, without ACQ4: record -> sweep -> forwarder -> real daemon."""
    with ForwarderAndDaemon(device="acq4") as (fwd, sub):
        fwd.new_cell(0, "acq4-cell")
        for seed, spike in enumerate((True, False, True)):
            v, i = spike_sweep(fs=50_000.0, n=5000, onset=1000, spike=spike, seed=seed)
            sweep = sweep_from_record(*acq4_record(v, i, 50_000.0), "Clamp1")
            fwd.send_sweep(0, sweep.v_mv, sweep.i_pa, sweep.fs)
        assert sub.wait_for(lambda s: len(s.of("label")) + len(s.of("skip")) >= 3, 20)
        assert len(sub.of("label")) == 2 and [m["reason"] for m in sub.of("skip")] == ["no_spike"]
        assert all(m["cell_id"] == "acq4-cell" for m in sub.of("label"))
