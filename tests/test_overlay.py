"""The overlay: its state model, and the Qt widget offscreen against a real daemon and simulator."""
import os
import subprocess
import sys
import time

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from helpers import free_endpoint  # noqa: E402
from plugins.feed import FeedState  # noqa: E402


def label(hs, cell, lab, n, p=0.9):
    probs = {"Exc": 1 - p, "Pvalb": p} if lab == "Pvalb" else {"Exc": p, "Pvalb": 1 - p}
    return {"schema": "rtclassify.label/1", "headstage": hs, "cell_id": cell, "label": lab, "probs": probs,
            "cell": {"label": lab, "probs": probs, "n_windows": n}, "latency_ms": {"process": 0.5}}


def test_state_follows_labels_cells_and_heartbeats():
    s = FeedState()
    assert s.stale(now=0.0)
    s.apply("heartbeat", {"model": {"name": "m", "classes": ["Exc", "Pvalb"]}, "headstages": {}}, now=1.0)
    assert not s.stale(now=2.0) and s.stale(now=7.0)
    s.apply("label", label(0, "A", "Pvalb", 1), now=1.5)
    assert s.headstages[0].verdict["label"] == "Pvalb" and not s.headstages[0].enough_evidence
    s.apply("label", label(0, "A", "Pvalb", 3), now=1.6)
    assert s.headstages[0].enough_evidence
    s.apply("heartbeat", {"headstages": {"0": {"cell_id": "B"}}}, now=2.0)  # a new cell: old verdict gone
    assert s.headstages[0].verdict is None and s.headstages[0].cell_id == "B"


def test_a_panel_warns_when_the_last_label_lies_outside_the_envelope():
    pytest.importorskip("pyqtgraph")
    from pyqtgraph.Qt import QtWidgets

    from plugins.overlay import OverlayWidget

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    state = FeedState()
    state.apply("heartbeat", {"model": {"name": "m", "classes": ["Exc", "Pvalb"]}, "headstages": {}}, now=1.0)
    widget = OverlayWidget(state, "test")
    try:
        for envelope, shown in (("inside", "inside the model's validated envelope"),
                                ("outside: filter 1000 Hz is below the validated 2000 Hz",
                                 "⚠ outside the validated envelope: filter 1000 Hz is below the validated 2000 Hz")):
            state.apply("label", {**label(0, "A", "Pvalb", 1), "envelope": envelope})
            widget.refresh()
            app.processEvents()
            assert shown in widget.panels[0].envelope.text()
    finally:
        widget.close()
        widget.deleteLater()
        app.processEvents()


@pytest.mark.slow
def test_widget_shows_the_received_verdict_and_warns_when_heartbeats_stop(tmp_path):
    pytest.importorskip("pyqtgraph")
    from pyqtgraph.Qt import QtWidgets

    from plugins.feed import ZmqFeed
    from plugins.overlay import OverlayWidget

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    data_ep, label_ep = free_endpoint(), free_endpoint()
    daemon = subprocess.Popen([sys.executable, "-m", "rtclassify", "serve", "--source", "zmq", "--connect", data_ep,
                               "--publish", label_ep, "--model", "genetic5", "--label-window"], stderr=subprocess.DEVNULL)
    feed = ZmqFeed(label_ep)
    state = FeedState()
    # stale after 3 s: above the daemon's 2 s heartbeat interval and its poll slack (at 2.0 the
    # check raced the next heartbeat and failed now and then)
    widget = OverlayWidget(state, label_ep, stale_s=3.0)
    widget.show()
    sim = None
    try:
        deadline = time.time() + 60
        while state.last_heartbeat is None and time.time() < deadline:
            for t, m in feed.poll():
                state.apply(t, m)
            time.sleep(0.05)
        sim = subprocess.run([sys.executable, "-m", "rtclassify", "simulate", "--sink", "zmq", "--bind", data_ep,
                              "--cells", "2", "--headstages", "1"], capture_output=True, timeout=120)
        assert sim.returncode == 0
        last = None
        deadline = time.time() + 10
        while time.time() < deadline:
            for t, m in feed.poll():
                state.apply(t, m)
                if t == "label":
                    last = m
            time.sleep(0.05)
        assert last is not None
        widget.refresh()
        app.processEvents()
        panel = widget.panels[0]
        assert panel.verdict.text().startswith(last["cell"]["label"])
        ev = last["cell"]["evidence"]
        assert f"{ev['short_square']} short square(s) · {ev['long_step']} long step(s)" in panel.detail.text()
        assert ("inside" in panel.envelope.text()) == (last["envelope"] == "inside")
        assert "live" in widget.banner.text()
        shot = tmp_path / "overlay.png"
        assert widget.grab().save(str(shot), "PNG") and shot.stat().st_size > 10_000
        image = widget.grab().toImage()
        colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
        assert len(colours) > 20  # not blank
        daemon.terminate()
        daemon.wait(20)
        time.sleep(3.5)
        widget.refresh()
        assert "NO HEARTBEAT" in widget.banner.text()
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(20)
        feed.close()
        widget.close()


@pytest.mark.slow
def test_overlay_cli_screenshot_shows_waiting_state_without_a_daemon(tmp_path):
    pytest.importorskip("pyqtgraph")
    shot = tmp_path / "wait.png"
    r = subprocess.run([sys.executable, "-m", "rtclassify", "overlay", "--connect", free_endpoint(), "--screenshot",
                        str(shot), "--timeout-s", "1"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    assert shot.stat().st_size > 1000


def test_a_shown_percentage_never_passes_a_rule_the_value_did_not():
    from plugins.overlay import percent_floor

    assert percent_floor(0.7952) == 79 and percent_floor(0.8) == 80 and percent_floor(1.0) == 100


def long_step(hs, cell, amp, rate, verdict_label, uncertain, n):
    probs = {"Exc": 0.55, "Pvalb": 0.45}
    return {"schema": "rtclassify.label/1", "headstage": hs, "cell_id": cell, "label": "Exc", "probs": probs,
            "protocol": "long_step", "features": {"step": {"stim_amp": amp, "avg_rate": rate}, "cell": {}},
            "cell": {"label": verdict_label, "probs": probs, "n_windows": n, "uncertain": uncertain,
                     "reason": "thin" if uncertain else None, "evidence": {"short_square": 0, "long_step": n}},
            "latency_ms": {"process": 3.0}, "envelope": "inside"}


def test_an_uncertain_verdict_is_shown_plainly_with_the_step_familys_f_i_points():
    pytest.importorskip("pyqtgraph")
    from pyqtgraph.Qt import QtWidgets

    from plugins.overlay import OverlayWidget

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    s = FeedState()
    s.apply("heartbeat", {"model": {"name": "m", "classes": ["Exc", "Pvalb"]}, "headstages": {}})
    for k, (amp, rate) in enumerate([(-100.0, 0.0), (50.0, 4.0), (100.0, 12.0)]):
        s.apply("label", long_step(0, "A", amp, rate, None, True, k + 1))
    view = s.headstages[0]
    assert view.fi == [(-100.0, 0.0), (50.0, 4.0), (100.0, 12.0)] and not view.enough_evidence  # uncertain: never
    w = OverlayWidget(s, "test")
    try:
        w.refresh()
        app.processEvents()
        panel = w.panels[0]
        assert panel.verdict.text() == "uncertain (thin)"
        assert "0 short square(s) · 3 long step(s)" in panel.detail.text()
        xs, ys = panel.fi_points.getData()
        assert list(xs) == [-100.0, 50.0, 100.0] and list(ys) == [0.0, 4.0, 12.0]
    finally:
        w.close()
        w.deleteLater()  # gone while the application is: Qt objects left to interpreter exit can crash it
        app.processEvents()
    s.apply("label", long_step(0, "B", 50.0, 2.0, "Exc", False, 1))  # a new cell: its own points only
    assert s.headstages[0].fi == [(50.0, 2.0)]
