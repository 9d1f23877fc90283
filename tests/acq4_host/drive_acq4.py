"""Drive real ACQ4 headless with rtclassify's module loaded as docs/plugins.md says, through
short-square sweeps of ACQ4's simulated patch clamp (MockClamp, a Hodgkin-Huxley neuron).

Runs in ACQ4's own Python environment (PyQt5), from tests/test_acq4_host.py:

    python drive_acq4.py --acq4 DIR --plan plan.json --out result.json --screenshot module.png

plan.json: {"publish": endpoint the module binds, "labels": the daemon's --publish endpoint,
"sweeps": [{"amplitude_pa": ..., "new_cell": "id" (optional, announced before the sweep)}],
"pulse_start_s": 0.01, "pulse_ms": 3.0}. result.json: per sweep the amplitude and what the module
saw; the module's overlay state (labels, per headstage the last label or skip); its refusals; and
the sweeps as recorded (V mV, I pA, rate), so that the test can check what reached the daemon.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
CONFIG = """
imports: []
devices: readConfigFile('devices.cfg')
modules:
    Task Runner:
        module: 'TaskRunner'
        config:
            taskDir: 'config/example/protocols'
    rtclassify:
        module: 'plugins.acq4_module.RTClassify'
        config:
            devices: {{'Clamp1': 0}}
            publish: '{publish}'
            labels: '{labels}'
            task_runner: 'Task Runner'
"""


def pump(app, seconds: float, until=lambda: False) -> bool:
    """Run Qt's event loop for up to `seconds`, or until `until()`; whether it came true."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        app.processEvents()
        if until():
            return True
        time.sleep(0.005)
    return until()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--acq4", required=True, help="the extracted ACQ4 snapshot")
    p.add_argument("--plan", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--screenshot")
    a = p.parse_args()
    plan = json.loads(Path(a.plan).read_text())
    os.chdir(a.acq4)  # ACQ4 finds config/ and its protocols relative to its folder
    cfg = Path(a.acq4) / "config" / "example" / "rtclassify_host.cfg"
    cfg.write_text(CONFIG.format(publish=plan["publish"], labels=plan["labels"]))

    import numpy as np
    import pyqtgraph as pg
    from acq4.Manager import Manager
    from acq4.util import pg_setup  # noqa: F401 - ACQ4's own pyqtgraph settings
    from acq4.util.DataManager import getHandle

    app = pg.mkQApp()
    args = Manager.makeArgParser().parse_args(["-c", str(cfg), "-b", tempfile.mkdtemp(prefix="acq4-data-")])
    man = Manager.runFromCommandLine(args)
    # The example rig's MockClamp has 10 MOhm access and no bridge balance (its autoBridgeBalance
    # does nothing), so each step adds a 15-20 mV IR jump an experimenter would have balanced out:
    # its simulated access is set to 1 MOhm, as a balanced bridge would leave it. Its model cell's
    # 100 pF soma gives APs of 13-37 mV/ms, below the 20 mV/ms-and-acceleration rule the models'
    # training APs follow; 30 pF gives APs of 70-180 mV/ms, still slower than most cortical cells.
    cell = man.getDevice("Clamp1").simulator.model_cell
    cell.clamp.ra = plan.get("access_ohm", 1e6)
    cell.soma.cap = plan.get("soma_farad", 30e-12)
    runner = man.getModule("Task Runner")
    module = man.getModule("rtclassify")  # as a user opens it from the Manager's module list
    runner.loadTask(getHandle(str(Path(a.acq4) / "config" / "example" / "protocols" / "CCIV")))
    clamp = runner.docks["Clamp1"].widget()
    clamp.modeCombo.setCurrentIndex(clamp.modeCombo.findText("IC"))  # the protocol file says 'ic' (a snag)
    generator = clamp.cmdWidget.ui.waveGeneratorWidget

    frames = []
    runner.sigNewFrame.connect(lambda frame: frames.append(frame))
    pump(app, 1.0)
    sweeps = []
    for k, sweep in enumerate(plan["sweeps"]):
        if sweep.get("new_cell"):
            module.new_cell(0, sweep["new_cell"])
        amp = sweep["amplitude_pa"] * 1e-12
        generator.loadState({"function": f"pulse({plan['pulse_start_s']}, {plan['pulse_ms'] / 1000}, {amp!r})",
                             "params": {}, "advancedMode": True})
        runner.runSingle(store=False)
        if not pump(app, 30.0, lambda: len(frames) > k):
            print(f"sweep {k}: the Task Runner gave no frame", file=sys.stderr)
            break
        record = frames[k]["result"]["Clamp1"]
        data, info = record.asarray(), record.infoCopy()
        rows = {c["name"]: i for i, c in enumerate(info[0]["cols"])}
        sweeps.append({"amplitude_pa": sweep["amplitude_pa"], "mode": info[-1]["ClampState"]["mode"],
                       "rate": info[-1]["DAQ"]["primary"]["rate"],
                       "v_mv": (np.asarray(data[rows["primary"]]) * 1e3).tolist(),
                       "i_pa": (np.asarray(data[rows["command"]]) * 1e12).tolist()})
        pump(app, 0.3)
    n = len(sweeps)
    pump(app, 20.0, lambda: module.state.answers >= n)  # every sweep's label or skip shown
    view = module.state.headstages.get(0)
    result = {"sweeps": sweeps, "forwarded": module.forwarded, "refused": module.refused,
              "overlay": {"labels": module.state.labels, "answers": module.state.answers,
                          "cell_id": view.cell_id if view else None,
                          "label": (view.label or {}).get("cell", {}).get("label") if view and view.label else None,
                          "last_skip": (view.skip or {}).get("reason") if view and view.skip else None}}
    if a.screenshot:
        module.win.resize(720, 420)
        pump(app, 0.5)
        module.win.grab().save(a.screenshot)
    module.quit()  # ACQ4's lifecycle: quit, then load again (binds the same endpoint again)
    conf = (man.definedModules.get("rtclassify") or {}).get("config")
    again = man.loadModule("plugins.acq4_module.RTClassify", "rtclassify-again", conf)
    result["reloaded"] = again.forwarder is not None
    again.quit()
    Path(a.out).write_text(json.dumps(result))
    man.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
