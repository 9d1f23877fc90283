"""The overlay widget (Qt via pyqtgraph): the current cell's type, how sure, how many sweeps, how fresh.

One panel per headstage: the accumulated verdict in the class's colour with its probability and
window count and an "enough evidence" state, per-class probability bars, the last classified
window with its AP peak marked, the label latency; a banner turns red when heartbeats stop.
"""
import time

from plugins.feed import STALE_S, FeedState
from rtclassify.colors import CLASS_COLORS

try:
    from pyqtgraph.Qt import QtCore, QtWidgets
except ImportError as exc:  # pragma: no cover - reported by the CLI
    raise ImportError("the overlay needs pyqtgraph and a Qt binding: pip install 'rtclassify[overlay]'") from exc
import pyqtgraph as pg

GREY = "#888888"


def percent_floor(p: float) -> int:
    """p as a whole percentage, rounded down: a displayed 80% is never a 79.5% that a >= 80% rule
    (the "enough evidence" state) did not pass."""
    import math

    return int(math.floor(100.0 * p + 1e-9))


class HeadstagePanel(QtWidgets.QFrame):
    """The view of one headstage."""

    def __init__(self, number: int, classes: list[str]):
        super().__init__()
        self.number = number
        self.classes = classes
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        layout = QtWidgets.QGridLayout(self)
        self.title = QtWidgets.QLabel(f"Headstage {number}")
        self.title.setStyleSheet("color: #cccccc; font-size: 11pt;")
        self.verdict = QtWidgets.QLabel("waiting for a label…")
        self.verdict.setStyleSheet(f"color: {GREY}; font-size: 28pt; font-weight: bold;")
        self.detail = QtWidgets.QLabel("")
        self.detail.setStyleSheet("color: #dddddd; font-size: 11pt;")
        self.evidence = QtWidgets.QLabel("")
        self.evidence.setStyleSheet("font-size: 11pt;")
        layout.addWidget(self.title, 0, 0, 1, 2)
        layout.addWidget(self.verdict, 1, 0, 1, 2)
        layout.addWidget(self.detail, 2, 0, 1, 2)
        layout.addWidget(self.evidence, 3, 0, 1, 2)
        self.envelope = QtWidgets.QLabel("")  # whether the last label's input lies where the model was validated
        self.envelope.setWordWrap(True)
        layout.addWidget(self.envelope, 4, 0, 1, 2)
        self.bars = {}
        for row, c in enumerate(classes):
            name = QtWidgets.QLabel(c)
            name.setStyleSheet(f"color: {CLASS_COLORS.get(c, '#ffffff')}; font-weight: bold;")
            bar = QtWidgets.QProgressBar()
            bar.setRange(0, 100)
            bar.setFormat("%p%")
            bar.setStyleSheet("QProgressBar {color: white; border: 1px solid #555; background: #222;}"
                              f"QProgressBar::chunk {{background: {CLASS_COLORS.get(c, '#aaaaaa')};}}")
            layout.addWidget(name, 5 + row, 0)
            layout.addWidget(bar, 5 + row, 1)
            self.bars[c] = bar
        self.plot = pg.PlotWidget(background="#111111")
        self.plot.setMinimumHeight(140)
        self.plot.setLabel("left", "V", units="mV")
        self.plot.setLabel("bottom", "time from peak", units="ms")
        self.trace = self.plot.plot(pen=pg.mkPen("#eeeeee", width=2))
        self.peak = self.plot.plot(pen=None, symbol="o", symbolBrush="#ffdd00", symbolSize=9)
        layout.addWidget(self.plot, 5 + len(classes), 0, 1, 2)
        self.fi_plot = pg.PlotWidget(background="#111111")  # the step family: firing rate against current
        self.fi_plot.setMinimumHeight(120)
        self.fi_plot.setLabel("left", "rate", units="Hz")
        self.fi_plot.setLabel("bottom", "step", units="pA")
        self.fi_points = self.fi_plot.plot(pen=None, symbol="o", symbolBrush="#66ccff", symbolSize=8)
        layout.addWidget(self.fi_plot, 6 + len(classes), 0, 1, 2)

    def show_view(self, view, now: float) -> None:
        v = view.verdict
        if not v:
            last = view.skip
            self.verdict.setText("waiting for a label…")
            self.verdict.setStyleSheet(f"color: {GREY}; font-size: 28pt; font-weight: bold;")
            self.detail.setText(f"cell {view.cell_id or '—'}" + (f"; last stimulus skipped: {last['reason']}" if last else ""))
            self.evidence.setText("")
            self.envelope.setText("")
            for bar in self.bars.values():
                bar.setValue(0)
            return
        label = view.label
        p = max(v["probs"].values())
        if v.get("label") is None:  # the evidence is thin or conflicts: no type, said plainly
            self.verdict.setText(f"uncertain ({v.get('reason') or 'thin'})")
            self.verdict.setStyleSheet(f"color: {GREY}; font-size: 24pt; font-weight: bold;")
        else:
            color = CLASS_COLORS.get(v["label"], "#ffffff")
            self.verdict.setText(f"{v['label']}  {percent_floor(p)}%")
            self.verdict.setStyleSheet(f"color: {color}; font-size: 28pt; font-weight: bold;")
        age = now - view.received_at if view.received_at is not None else float("nan")
        ev = v.get("evidence") or {}
        told = (f"{ev.get('short_square', v['n_windows'])} short square(s) · {ev.get('long_step', 0)} long step(s)"
                if ev else f"{v['n_windows']} sweep(s)")
        last = ("long step" if label.get("protocol") == "long_step"
                else f"last AP: {label['label']}" + (" (uncertain)" if label.get("uncertain") else ""))
        self.detail.setText(f"cell {view.cell_id or '—'} · {told} · {last} · label "
                            f"{label['latency_ms']['process']:.2f} ms after its last sample · {age:.1f} s ago")
        if view.enough_evidence:
            self.evidence.setText("✔ enough evidence")
            self.evidence.setStyleSheet("color: #55dd55; font-size: 11pt; font-weight: bold;")
        else:
            self.evidence.setText("… collecting: more sweeps needed")
            self.evidence.setStyleSheet("color: #ddaa33; font-size: 11pt;")
        self.show_envelope(label.get("envelope"))
        for c, bar in self.bars.items():
            bar.setValue(percent_floor(v["probs"].get(c, 0.0)))
        window = (view.ap or {}).get("window") or label.get("window")
        if window:
            fs = window["fs_hz"]
            a = window["anchor_index"]
            y = window["v_mv"]
            x = [(k - a) * 1000.0 / fs for k in range(len(y))]
            self.trace.setData(x, y)
            self.peak.setData([0.0], [y[a]])
        if view.fi:
            self.fi_points.setData([a for a, _ in view.fi], [r for _, r in view.fi])

    def show_envelope(self, envelope: str | None) -> None:
        """The last label's `envelope`: quiet when inside, an orange warning with the reason when outside
        (the label may still be right, but the model's figures do not vouch for it)."""
        if not envelope:
            self.envelope.setText("")
        elif envelope == "inside":
            self.envelope.setText("rig inside the model's validated envelope")
            self.envelope.setStyleSheet("color: #888888; font-size: 10pt;")
        else:
            self.envelope.setText("⚠ outside the validated envelope: " + envelope.removeprefix("outside: "))
            self.envelope.setStyleSheet("color: #ff9933; font-size: 11pt; font-weight: bold;")


class OverlayWidget(QtWidgets.QWidget):
    """All headstages plus a connection banner; call `refresh()` after feeding `state`."""

    def __init__(self, state: FeedState, source: str, stale_s: float = STALE_S):
        super().__init__()
        self.state = state
        self.stale_s = stale_s
        self.setWindowTitle("rtclassify")
        self.setStyleSheet("background: #1b1b1b;")
        self.setWindowFlag(QtCore.Qt.WindowType.WindowStaysOnTopHint, True)
        self.layout_ = QtWidgets.QVBoxLayout(self)
        self.banner = QtWidgets.QLabel("")
        self.banner.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.layout_.addWidget(self.banner)
        self.source = source
        self.panels: dict[int, HeadstagePanel] = {}
        self.row = QtWidgets.QHBoxLayout()
        self.layout_.addLayout(self.row)
        self.resize(520, 560)

    def classes(self) -> list[str]:
        if self.state.model:
            return list(self.state.model.get("classes", []))
        for view in self.state.headstages.values():
            if view.label:
                return list(view.label["probs"])
        return []

    def refresh(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        age = self.state.heartbeat_age(now)
        if self.state.stale(now, self.stale_s):
            what = "no heartbeat yet" if age is None else f"NO HEARTBEAT for {age:.0f} s — is the daemon running?"
            self.banner.setText(f"⚠ {what} ({self.source})")
            self.banner.setStyleSheet("background: #aa2222; color: white; font-size: 12pt; font-weight: bold;")
        else:
            model = self.state.model or {}
            self.banner.setText(f"● live · {self.source} · model {model.get('name', '?')} · heartbeat {age:.1f} s ago")
            self.banner.setStyleSheet("background: #224422; color: #ccffcc; font-size: 11pt;")
        classes = self.classes()
        for number in sorted(self.state.headstages):
            if number not in self.panels and classes:
                panel = HeadstagePanel(number, classes)
                self.panels[number] = panel
                self.row.addWidget(panel)
            if number in self.panels:
                self.panels[number].show_view(self.state.headstages[number], now)
        if self.panels:
            self.resize(max(520, 460 * len(self.panels)), 600)


QT_NOISE = ("propagateSizeHints",)  # what Qt's offscreen platform says of every window: nothing to act on


def quiet_qt_noise():
    """Keep Qt's own chatter that says nothing to a user (QT_NOISE) off the terminal while the overlay
    runs; other Qt messages pass through. Returns the handler to put back (restore_qt_messages)."""
    import sys

    def handler(kind, context, message):
        if not any(n in message for n in QT_NOISE):
            print(message, file=sys.stderr)

    _HANDLERS.append(handler)  # Qt keeps no reference of its own
    return QtCore.qInstallMessageHandler(handler)


_HANDLERS = []


def run_overlay(feed, source: str, screenshot: str | None = None, timeout_s: float = 20.0,
                stale_s: float = STALE_S, after_labels: int = 1) -> int:
    """Show the overlay (or, with `screenshot`, render it once `after_labels` labels have arrived,
    or at the timeout, and save a PNG)."""
    previous = quiet_qt_noise()
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    state = FeedState()
    widget = OverlayWidget(state, source, stale_s)
    started = time.monotonic()

    def tick():
        for topic, msg in feed.poll():
            state.apply(topic, msg)
        widget.refresh()
        if screenshot and (state.labels >= after_labels or time.monotonic() - started > timeout_s):
            if state.labels > 0:  # let a second heartbeat or label land so the picture is current
                QtCore.QTimer.singleShot(300, finish)
                timer.stop()
            else:
                finish()

    def finish():
        for topic, msg in feed.poll():
            state.apply(topic, msg)
        widget.refresh()
        app.processEvents()
        widget.grab().save(screenshot, "PNG")
        app.quit()

    timer = QtCore.QTimer()
    timer.timeout.connect(tick)
    timer.start(50)
    widget.show()
    app.exec()
    QtCore.qInstallMessageHandler(previous)
    feed.close()
    return 0
