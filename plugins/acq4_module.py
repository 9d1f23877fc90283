"""rtclassify inside ACQ4: forwards each recorded current-clamp sweep to the daemon, shows the labels.

Load it from ACQ4's configuration by dotted name (module: 'plugins.acq4_module.RTClassify'; the
snippet is in docs/plugins.md). Only this file touches ACQ4, and it only wires signals: records
become sweeps in plugins.acq4_records, sweeps go out through plugins.forwarder.SweepForwarder,
labels come back through plugins.feed into plugins.overlay's widget, all tested without ACQ4.
ACQ4 is not installable from the package index in a current version, so this file has not been
run here.
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
        runner = manager.getModule(self.settings.task_runner)
        runner.sigNewFrame.connect(self.forward_frame)  # emitted at the end of each task
        self.timer = QtCore.QTimer()
        self.timer.timeout.connect(self.poll_labels)
        self.timer.start(POLL_MS)
        self.win.show()

    def forward_frame(self, frame) -> None:
        """Send the sweep of every configured clamp device in one finished task."""
        result = frame.get("result") or {}
        for device, headstage in self.settings.devices.items():
            record = result.get(device)
            if record is None:
                continue
            try:
                sweep = sweep_from_record(record.asarray(), record.infoCopy(), device)
            except RecordError as exc:
                log.info("rtclassify: not forwarded: %s", exc)
                continue
            self.forwarder.send_sweep(headstage, sweep.v_mv, sweep.i_pa, sweep.fs)

    def new_cell(self, headstage: int, cell_id: str) -> None:
        """Call when a new cell is patched (e.g. from a pipette-state change) to reset its verdict."""
        self.forwarder.new_cell(headstage, cell_id)

    def poll_labels(self) -> None:
        for topic, msg in self.feed.poll():
            self.state.apply(topic, msg)
        self.win.refresh()

    def quit(self):
        self.timer.stop()
        self.feed.close()
        self.forwarder.close()
        Module.quit(self)
