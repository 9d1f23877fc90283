"""File replay: recordings (.npz arrays v and i, or the current-clamp sweeps of NWB files) played
into the daemon as an acquisition program that knows its stimuli would stream them."""
import time

import numpy as np


def replay_recordings(path: str, fs_hz: float | None, detector) -> list[tuple[str, np.ndarray, np.ndarray, float, list]]:
    """(name, v mV, i pA, fs Hz, stimulus onsets) of one replay file.

    .npz: one recording (arrays v, i) at fs_hz; its onsets are the steps on i, found as `detect`
    finds them. .nwb: every current-clamp sweep with a command (any layout rtclassify reads), at
    the file's own rates; onsets are the short-square steps (rtclassify.formats.stimuli).
    """
    from rtclassify.dsp.detector import detect_steps

    if str(path).endswith(".nwb"):
        from rtclassify.formats.nwb import read_sweeps
        from rtclassify.formats.stimuli import find_short_square

        out = []
        for s in read_sweeps(path):
            if s.clamp_mode != "current" or s.command is None or len(s.command) != len(s.response):
                continue
            step = find_short_square(s.stimulus, s.command, s.fs)
            out.append((f"{path}#sweep{s.sweep}", s.response, s.command, s.fs, [step.onset] if step else []))
        return out
    from rtclassify.formats.npz import read_npz_recording

    if not fs_hz:
        raise ValueError("an .npz recording needs its sampling rate (--fs)")
    v, i = read_npz_recording(path)
    return [(str(path), v, i, fs_hz, [int(x) for x in detect_steps(i, detector)[0]])]


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
        daemon.on_event({"type": "new_cell", "headstage": 0, "cell_id": str(path), "sample": position})
        for _, v, i, fs, onsets in recordings:
            chunk = max(1, int(round(chunk_ms * fs / 1000)))
            for a in range(0, len(v), chunk):
                if stop.is_set():
                    return
                if speed > 0:
                    delay = t_start + played_s + a / fs / speed - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                x = np.column_stack([v[a:a + chunk], i[a:a + chunk]])
                daemon.on_data(0, position + a, None, fs, x, time.perf_counter())
                if a == 0:
                    for onset in onsets:
                        daemon.on_event({"type": "stimulus", "headstage": 0, "sample": position + int(onset)})
                daemon.tick()
            position += len(v)
            played_s += len(v) / fs / (speed or 1)
