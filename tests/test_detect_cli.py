import json

import numpy as np
from click.testing import CliRunner

from rtclassify.cli import main


def test_detect_prints_one_json_line_per_file(evoked_dir, tmp_path):
    good = evoked_dir / "1486753952.16_26_1_0.901.npz"  # annotated AP peak 2.48 ms after the first sample
    np.savez(tmp_path / "bad.npz", v=np.zeros(10))
    result = CliRunner().invoke(main, ["detect", "--fs", "50000", str(good), str(tmp_path / "bad.npz")])
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert result.exit_code == 1 and len(lines) == 2
    first = lines[0]
    assert first["stimuli"] == [{"onset_s": 0.002, "offset_s": 0.00502}]
    assert abs(first["spikes"][0]["peak_s"] - 0.00248) < 0.05e-3
    assert first["spikes"][0]["obscured"] is False
    assert set(first["spikes"][0]) == {"peak_s", "threshold_s", "peak_mv", "obscured"}
    assert "need v and i" in lines[1]["error"]


def test_detect_honours_explicit_units(tmp_path):
    fs = 50_000
    v = np.full(2000, -0.065)
    i = np.zeros(2000)
    i[500:650] = 300e-12
    np.savez(tmp_path / "x.npz", v=v, i=i)
    result = CliRunner().invoke(main, ["detect", "--fs", str(fs), "--v-units", "V", "--i-units", "A",
                                       str(tmp_path / "x.npz")])
    out = json.loads(result.output)
    assert result.exit_code == 0
    assert out["stimuli"] == [{"onset_s": 0.01, "offset_s": 0.013}] and out["spikes"] == []


def test_detect_flags_an_ap_hidden_by_the_pulse_end(evoked_dir):
    """A real AP riding on a ~100 mV bridge artefact: V still rising when the 3 ms pulse ends."""
    hidden = evoked_dir / "1544582617.589_41_0_1.105.npz"
    result = CliRunner().invoke(main, ["detect", "--fs", "50000", str(hidden)])
    out = json.loads(result.output)
    assert result.exit_code == 0 and len(out["spikes"]) == 1
    spike = out["spikes"][0]
    assert spike["obscured"] is True
    assert 2.96e-3 <= spike["peak_s"] < 3.02e-3  # the last sample before the pulse end, 3.02 ms
    assert 1.5e-3 <= spike["threshold_s"] <= 1.95e-3  # the knee: annotated onset 1.60 ms, max slope 1.91 ms
