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
    assert set(first["spikes"][0]) == {"peak_s", "threshold_s", "peak_mv"}
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
