"""One label (or the reason there is none) per recorded sweep and channel, for files of any format:
`rtclassify sweeps --model`, `rtclassify watch` and the CSV sidecar of `rtclassify annotate`.

A short square (one 1-5 ms step, the AP network's training protocol) is classified on the AP it
evoked, cut exactly as the training windows were (offline/sweep_windows.evoked_window): fields
`label`, `p_<class>`, `protocol: "short_square"`. A sweep of long steps is measured instead
(rtclassify.features: `protocol: "long_step"`, `features` of each step): its firing, passive
response and AP shape are evidence for the cell verdict (rtclassify.verdict.cell.CellEvidence), not
for the AP network. With steps="any" the first AP of a long step is also labelled by the AP
network, its `envelope` saying that it is outside the training protocol; that label does not join
the verdict.
"""
import numpy as np

from rtclassify.dsp.temperature import warp_factor
from rtclassify.dsp.windows import check_stream_rate
from rtclassify.model.envelope import INSIDE, RigInfo, judge
from rtclassify.model.trust import is_uncertain
from rtclassify.formats.stimuli import SHORT_STEP_MS, is_short, steps_after_test_pulse
from rtclassify.offline.sweep_windows import evoked_window
from rtclassify.features.family import bandwidth_hz
from rtclassify.features.step import REBOUND_S
from rtclassify.features.sweeps import long_steps_and_rebounds, measure_sweep

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


def rig_fields(s, rig: RigInfo) -> dict:
    """The `rig` a sweep was judged with: its rate, the filter (the file's own, else the declared one),
    the declared temperature (None: not told, read as 34 °C) and the time warp applied."""
    merged = RigInfo.from_values(filter_hz=s.filter_hz).merged_over(rig)
    return {"fs": float(s.fs), "filter_hz": merged.filter_hz, "temperature_c": merged.temperature_c,
            "warp": warp_factor(merged.temperature_c)}


def label_sweep(s, model, steps: str = "short", rig: RigInfo = RigInfo(), evidence=None,
                min_confidence: float | None = None) -> dict:
    """Fields for one Sweep: `label`, `p_<class>`, `envelope`, `protocol`, `stim_onset_sample`,
    `peak_sample`; for long steps `protocol: "long_step"` and `features` (one dict per step); or `skip`
    (the reason) and `skip_reason` (the daemon's code: qc or no_spike). rig: what the user declares
    (--filter-hz, --temperature-c); the file's own filter (a telegraph) takes precedence. evidence: the
    cell's CellEvidence, which takes the short square's probabilities or the measured long steps. The
    AP's probabilities are read as rtclassify.model.trust says; `uncertain`: the top one is below
    min_confidence (None: the card's)."""
    if s.refusal:
        return {"skip": s.refusal, "skip_reason": "qc"}
    if s.clamp_mode != "current":
        return {"skip": "voltage clamp: no label", "skip_reason": "qc"}
    found = long_steps_and_rebounds(s) if np.all(np.isfinite(s.response)) else []
    measured = measure_sweep(s, found) if found else []
    if evidence is not None:
        filt = RigInfo.from_values(filter_hz=s.filter_hz).merged_over(rig).filter_hz
        for m in measured:
            evidence.add_step(m, bandwidth_hz(s.fs, filt))
    long_fields = {}
    if measured:
        first, last = found[0][0], found[-1][1]
        needed = min(len(s.response), last + int(REBOUND_S * s.fs)) - 1  # the rebound after the last step
        long_fields = {"protocol": "long_step", "features": [m.summary() for m in measured],
                       "stim_onset_sample": int(first), "window_end_sample": int(needed)}
    unusable = check_stream_rate(s.fs, model.spec)
    if unusable and not measured:
        return {"skip": unusable, "skip_reason": "qc"}
    onset, offset, envelope = find_step(s, steps)
    if onset is None or unusable:
        return long_fields or {"skip": unusable or envelope, "skip_reason": "qc"}
    rig = RigInfo.from_values(filter_hz=s.filter_hz).merged_over(rig)
    cut = evoked_window(s, onset, offset, model.spec, first_in_step=envelope != "inside",
                        warp=warp_factor(rig.temperature_c))
    if isinstance(cut, str):
        if long_fields:
            return {**long_fields, "ap_skip": cut}
        return {"skip": cut, "skip_reason": "no_spike" if cut.startswith("0 APs") else "qc",
                "stim_onset_sample": int(onset)}
    window, peak = cut
    trust = model.trust
    probs = trust.read(model.run, window[None, :], [rig.temperature_c is None], model.spec.n_before)[0]
    short = envelope == "inside"
    judged = judge(model.envelope, s.fs, rig, window)
    if envelope == INSIDE:
        envelope = judged
    elif judged != INSIDE:  # outside the protocol, and more
        envelope += "; " + judged.removeprefix("outside: ")
    probs, envelope = trust.answer(probs, envelope)
    if evidence is not None and short:
        evidence.add_ap(probs)
    out = {"label": model.classes[int(np.argmax(probs))]}
    out.update({f"p_{c}": round(float(p), 4) for c, p in zip(model.classes, probs)})
    out["uncertain"] = is_uncertain(probs, trust.asked(min_confidence))
    out.update({"envelope": envelope, "protocol": "short_square" if short else "long_step",
                "stim_onset_sample": int(onset), "peak_sample": int(peak), "probs": [float(p) for p in probs]})
    out.update({k: v for k, v in long_fields.items() if k == "features"})
    return out
