"""The benchmark runs and its output is complete (timings are reported, never asserted)."""
import json

import pytest
from click.testing import CliRunner

from rtclassify.cli import main

pytestmark = pytest.mark.slow


def test_quick_bench_writes_every_required_key(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--quick", "--json", str(out), "--markdown", str(tmp_path / "b.md"),
                                       "--plot", str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    for key in ("e2e_zmq_ms", "e2e_zmq_200khz_ms", "e2e_lsl_ms"):
        assert set(r[key]) >= {"p50", "p95", "p99", "max", "n", "unanswered"}
        assert r[key]["n"] > 0 and r[key]["unanswered"] == 0
    assert set(r["process_ms"]) >= {"p50", "p99"}
    long_steps = r["long_steps"]
    if "rows" in long_steps:  # the shared step family streamed live: each step answered once
        row = long_steps["rows"][0]
        assert row["steps"] > 0 and row["answered_once"] == row["steps"] and row["latency_ms"]["n"] == row["steps"]
    else:
        assert long_steps["skipped"].startswith("needs ")
    assert r["detector_msamples_per_s"] > 0
    assert isinstance(r["max_headstages_200khz"], int)
    assert r["machine"]["cores"] >= 1 and r["versions"]["torch"]
    from rtclassify.model.file_format import load_model
    assert r["inference"]["weights_sha256"] == load_model("genetic5").card["weights_sha256"]  # which build was timed
    assert r["inference"]["weights_sha256"][:12] in (tmp_path / "b.md").read_text()
    runtimes = {row["runtime"] for row in r["inference"]["cpu"]}
    assert runtimes == {"torchscript", "torchscript_unfolded", "eager", "kernels (daemon path)",
                        "kernels (daemon path), after 5 ms idle", "onnx (daemon path)",
                        "onnx (daemon path), after 5 ms idle", "torchscript (daemon path), after 5 ms idle"}
    assert r["inference"]["runtime"] == "kernels"  # what the daemon runs on this CPU
    assert r["inference"]["gc_full_collection_ms"]["all_tracked"] > 0
    assert (tmp_path / "b.png").stat().st_size > 1000 and "| figure | value |" in (tmp_path / "b.md").read_text()


def test_alternatives_are_timed_on_the_same_sweeps():
    from bench.alternatives import bench_alternatives
    from bench.report import render_alternatives

    a = bench_alternatives(quick=True)
    assert set(a["routes"]) == {"rtclassify", "efel_features_gbm", "published_50ms_eager"}
    for name, row in a["routes"].items():
        assert row["compute_ms"]["n"] == a["sweeps"], name
        # no route can label before its last needed sample exists
        assert row["label_after_onset_ms"]["p50"] >= row["data_needed_after_onset_ms"], name
    assert a["routes"]["published_50ms_eager"]["data_needed_after_onset_ms"] == 25.0
    assert any("published_50ms_eager" in line for line in render_alternatives(a))
