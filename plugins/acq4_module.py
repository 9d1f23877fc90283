"""rtclassify inside ACQ4: forwards each recorded current-clamp sweep to the daemon, shows the labels.

Load it from ACQ4's configuration by dotted name (module: 'plugins.acq4_module.RTClassify'; the
snippet is in docs/plugins.md). Only this file touches ACQ4, and it only wires signals: records
become sweeps in plugins.acq4_records, sweeps go out through plugins.forwarder.SweepForwarder,
labels come back through plugins.feed into plugins.overlay's widget. Run inside real ACQ4
(0.10.39, headless, its simulated MockClamp) by tests/test_acq4_host.py. An error in this glue is
logged in ACQ4's log and never raised into the Task Runner, whose run must go on.
"""
import logging

from acq4.modules.Module import Module  # noqa: E402 - this file is only importable inside ACQ4

from plugins.acq4_records import Acq4Settings, RecordError, sweep_from_record
from plugins.feed import FeedState, ZmqFeed
from plugins.forwarder import SweepForwarder
from plugins.overlay import OverlayWidget, QtCore

log = logging.getLogger(__name__)
POLL_MS = 50


class RTClassify(Module):
    """ACQ4 module: one window with the overlay; every finished task's clamp sweeps go to the daemon."""

    moduleDisplayName = "rtclassify"
    moduleCategory = "Analysis"

    def __init__(self, manager, name, config):
        Module.__init__(self, manager, name, config)
        self.settings = Acq4Settings.from_config(config)
        self.forwarder = SweepForwarder(self.settings.publish, device=self.settings.device_name)
        self.feed = ZmqFeed(self.settings.labels)
        self.state = FeedState()
        self.win = OverlayWidget(self.state, f"rtclassify labels from {self.settings.labels}")
        self.win.setWindowTitle("rtclassify")
        self.forwarded = 0  # sweeps sent to the daemon
        self.refused: list[str] = []  # why a record was not forwarded, one line each
        self.runner = manager.getModule(self.settings.task_runner)
        self.runner.sigNewFrame.connect(self.forward_frame)  # emitted at the end of each task
        self.timer = QtCore.QTimer()
        self.timer.timeout.connect(self.poll_labels)
        self.timer.start(POLL_MS)
        self.win.show()

    def forward_frame(self, frame) -> None:
        """Send the sweep of every configured clamp device in one finished task (never raises)."""
        result = frame.get("result") or {} if isinstance(frame, dict) else {}
        for device, headstage in self.settings.devices.items():
            record = result.get(device)
            if record is None:
                continue
            try:
                sweep = sweep_from_record(record.asarray(), record.infoCopy(), device)
                self.forwarder.send_sweep(headstage, sweep.v_mv, sweep.i_pa, sweep.fs)
                self.forwarded += 1
            except RecordError as exc:
                self.refused.append(str(exc))
                log.info("rtclassify: not forwarded: %s", exc)
            except Exception:  # the glue must not break the Task Runner's run
                self.refused.append(f"{device}: internal error (see ACQ4's log)")
                log.exception("rtclassify: forwarding %s failed", device)

    def new_cell(self, headstage: int, cell_id: str) -> None:
        """Call when a new cell is patched (e.g. from a pipette-state change) to reset its verdict."""
        self.forwarder.new_cell(headstage, cell_id)

    def poll_labels(self) -> None:
        try:
            for topic, msg in self.feed.poll():
                self.state.apply(topic, msg)
            self.win.refresh()
        except Exception:
            log.exception("rtclassify: reading labels failed")

    def quit(self):
        """ACQ4 closes the module: disconnect from the Task Runner and close the sockets (so that a
        reload binds the same endpoint again), then let ACQ4 forget the module."""
        self.timer.stop()
        try:
            self.runner.sigNewFrame.disconnect(self.forward_frame)
        except (TypeError, RuntimeError):
            pass
        self.feed.close()
        self.forwarder.close()
        self.win.close()
        Module.quit(self)
