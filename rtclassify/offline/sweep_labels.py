"""One label (or the reason there is none) per recorded sweep and channel, for files of any format:
`rtclassify sweeps --model`, `rtclassify watch` and the CSV sidecar of `rtclassify annotate`.

A sweep is classified on the first AP its first current step evoked, cut exactly as the training
windows were (offline/sweep_windows.evoked_window). By default only short squares (one 1-5 ms
step, the training protocol) are classified; with steps="any" the first step of any length is,
and the label's `envelope` says it is outside the training protocol.
"""
import numpy as np

from rtclassify.dsp.temperature import warp_factor
from rtclassify.dsp.windows import check_stream_rate
from rtclassify.model.envelope import INSIDE, RigInfo, judge
from rtclassify.formats.stimuli import SHORT_STEP_MS, is_short, steps_after_test_pulse
from rtclassify.offline.sweep_windows import evoked_window

STEP_MODES = ("short", "any")


def find_step(s, steps: str):
    """(onset, offset, envelope) of the step to classify in sweep `s`, or (None, None, reason)."""
    if s.command is None or len(s.command) != len(s.response):
        return None, None, "no command waveform for this channel: the stimulus onset is unknown"
    found = steps_after_test_pulse(s.command, s.fs, s.layout)
    if not found:
        return None, None, "no current step on the command"
    onset, offset = found[0]
    ms = (offset - onset) / s.fs * 1e3
    if len(found) == 1 and is_short(onset, offset, s.fs):
        return onset, offset, "inside"
    if steps == "short":
        lo, hi = SHORT_STEP_MS
        return None, None, (f"not a short square: {len(found)} step(s), the first {ms:.3g} ms (classified: one "
                            f"{lo:g}-{hi:g} ms step; --steps any classifies the first AP of any step)")
    return onset, offset, f"outside: the first AP of a {ms:.3g} ms step (the model learned {SHORT_STEP_MS[0]:g}-" \
                          f"{SHORT_STEP_MS[1]:g} ms short squares)"


def label_sweep(s, model, steps: str = "short", rig: RigInfo = RigInfo()) -> dict:
    """Fields for one Sweep: `label`, `p_<class>`, `envelope`, `stim_onset_sample`, `peak_sample`;
    or `skip` (the reason) and `skip_reason` (the daemon's code: qc or no_spike). rig: what the user
    declares (--filter-hz, --temperature-c); the file's own filter (a telegraph) takes precedence."""
    if s.refusal:
        return {"skip": s.refusal, "skip_reason": "qc"}
    if s.clamp_mode != "current":
        return {"skip": "voltage clamp: no label", "skip_reason": "qc"}
    unusable = check_stream_rate(s.fs, model.spec)
    if unusable:
        return {"skip": unusable, "skip_reason": "qc"}
    onset, offset, envelope = find_step(s, steps)
    if onset is None:
        return {"skip": envelope, "skip_reason": "qc"}
    rig = RigInfo.from_values(filter_hz=s.filter_hz).merged_over(rig)
    cut = evoked_window(s, onset, offset, model.spec, first_in_step=envelope != "inside",
                        warp=warp_factor(rig.temperature_c))
    if isinstance(cut, str):
        return {"skip": cut, "skip_reason": "no_spike" if cut.startswith("0 APs") else "qc",
                "stim_onset_sample": int(onset)}
    window, peak = cut
    probs = model.run(window[None, :].astype(np.float32))[0]
    out = {"label": model.classes[int(np.argmax(probs))]}
    out.update({f"p_{c}": round(float(p), 4) for c, p in zip(model.classes, probs)})
    judged = judge(model.envelope, s.fs, rig, window)
    if envelope == INSIDE:
        envelope = judged
    elif judged != INSIDE:  # outside the protocol, and more
        envelope += "; " + judged.removeprefix("outside: ")
    out.update({"envelope": envelope, "stim_onset_sample": int(onset), "peak_sample": int(peak),
                "probs": [float(p) for p in probs]})
    return out
