"""File replay: recordings (.npz arrays v and i, or the current-clamp sweeps of any recording
rtclassify reads: NWB, ABF, neo's formats) played into the daemon as an acquisition program that
knows its stimuli would stream them."""
import time

import numpy as np


def replay_recordings(path: str, fs_hz: float | None, detector) -> list[tuple[str, list, float, list]]:
    """(name, [(headstage, v mV, i pA, rig)], fs Hz, stimulus onsets) per sweep of one replay file; rig:
    what the file says of its rig (model.envelope.RigInfo: an ABF telegraph's filter), None if nothing.

    .npz: one recording (arrays v, i) at fs_hz on headstage 0; its onsets are the steps on i, found
    as `detect` finds them. Any other recording: each sweep's current-clamp channels that are a
    membrane potential with a command, at the file's own rate, channel k on headstage k; onsets
    are the command's steps (an ABF epoch table's, at any size; an NWB sweep's short square).
    """
    from rtclassify.dsp.detector import detect_steps
    from rtclassify.model.envelope import RigInfo

    if not str(path).endswith(".npz"):
        from rtclassify.formats.recordings import read_recording
        from rtclassify.formats.stimuli import LEVEL_LAYOUTS, find_short_square, steps_after_test_pulse

        by_sweep: dict[int, list] = {}
        for s in read_recording(path):
            if s.clamp_mode != "current" or s.refusal or s.command is None or len(s.command) != len(s.response):
                continue
            if s.layout.startswith(LEVEL_LAYOUTS):
                onsets = [a for a, _ in steps_after_test_pulse(s.command, s.fs, s.layout)]
            else:
                step = find_short_square(s.stimulus, s.command, s.fs, s.layout)
                onsets = [step.onset] if step else []
            rig = RigInfo.from_values(filter_hz=s.filter_hz) if s.filter_hz else None
            by_sweep.setdefault(s.sweep, []).append((s.channel, s.response, s.command, s.fs, onsets, rig))
        out = []
        for sweep, channels in sorted(by_sweep.items()):
            fs = channels[0][3]
            n = min(len(c[1]) for c in channels)
            out.append((f"{path}#sweep{sweep}", [(ch, v[:n], i[:n], rig) for ch, v, i, _, _, rig in channels], fs,
                        sorted({o for c in channels for o in c[4] if o < n})))
        return out
    from rtclassify.formats.npz import read_npz_recording

    if not fs_hz:
        raise ValueError("an .npz recording needs its sampling rate (--fs)")
    v, i = read_npz_recording(path)
    return [(str(path), [(0, v, i, None)], fs_hz, [int(x) for x in detect_steps(i, detector)[0]])]


def run_replay(daemon, files: list[str], fs_hz: float | None, speed: float, stop, chunk_ms: float = 1.0,
               on_ready=None) -> None:
    """Play recordings into the engine on headstage 0, each file a new cell; stimulus onsets are
    sent as `stimulus` events.

    speed: multiple of real time; 0 plays as fast as possible. Samples run on continuously from
    one recording to the next, as they would from an amplifier (a rate change restarts the
    headstage's buffer, as it would on a rig).
    """
    daemon.engine.source_status = {"transport": "file", "files": len(files)}
    if on_ready:
        on_ready()
    position, played_s = 0, 0.0
    t_start = time.perf_counter()
    for path in files:
        try:
            recordings = replay_recordings(path, fs_hz, daemon.engine.cfg.detector)
        except Exception as exc:
            daemon.malformed(f"replay file {path}: {type(exc).__name__}: {exc}", "unreadable_file")
            continue
        announced = set()
        for _, channels, fs, onsets in recordings:
            for h, *_ in channels:
                if h not in announced:  # each file a new cell, on each of its headstages
                    daemon.on_event({"type": "new_cell", "headstage": h, "cell_id": str(path), "sample": position})
                    announced.add(h)
            n = len(channels[0][1])
            chunk = max(1, int(round(chunk_ms * fs / 1000)))
            for a in range(0, n, chunk):
                if stop.is_set():
                    return
                if speed > 0:
                    delay = t_start + played_s + a / fs / speed - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                for h, v, i, rig in channels:
                    x = np.column_stack([v[a:a + chunk], i[a:a + chunk]])
                    daemon.on_data(h, position + a, None, fs, x, time.perf_counter(), rig)
                    if a == 0:
                        for onset in onsets:
                            daemon.on_event({"type": "stimulus", "headstage": h, "sample": position + int(onset)})
                daemon.tick()
            position += n
            played_s += n / fs / (speed or 1)
