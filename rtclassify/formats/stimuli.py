"""Which sweeps are short squares, and where their step is.

Two independent ways: the stimulus name or code (a small table, `short_square.csv`, of the Allen
ontology's names and codes and of MIES's short-pulse sets), and the command current itself (one
step of 1-5 ms after the test pulse, found by the same kernel the daemon uses).
"""
import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

TABLE = Path(__file__).with_name("short_square.csv")
TEST_PULSE_END_S = 0.021  # MIES and the Allen pipeline put a test pulse in a sweep's first ~20 ms
EPOCH_STEP_PA = 0.5  # a level change this large on an epoch-table command is a step
LEVEL_LAYOUTS = ("abf", "igor-waves", "heka")  # readers whose command is noise-free levels
SHORT_STEP_MS = (1.0, 5.0)  # a short square's step lasts 3 ms; accept 1-5 ms


@dataclass(frozen=True)
class StepFinding:
    onset: int  # sample of the step onset (first sample above threshold)
    offset: int  # first sample after the step
    by_name: bool  # the stimulus name or code says short square
    by_command: bool  # the command channel holds exactly one short step after the test pulse


@lru_cache(maxsize=1)
def read_table() -> tuple[tuple[str, str], ...]:
    with open(TABLE, newline="") as f:
        rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    return tuple((r["kind"], r["pattern"]) for r in rows)


def is_short_square_name(name: str) -> bool:
    """True when a stimulus name or code denotes a short square (see short_square.csv)."""
    name = (name or "").strip()
    for kind, pattern in read_table():
        if kind == "name" and name.lower() == pattern.lower():
            return True
        if kind == "code" and re.match(pattern, name, flags=re.IGNORECASE):
            return True
    return False


def steps_after_test_pulse(command_pa: np.ndarray, fs: float, layout: str = "") -> list[tuple[int, int]]:
    """(onset, offset) sample pairs of the current steps after the test pulse on a command trace (pA).

    layout: the reader's (Sweep.layout). An ABF command is its epoch table's waveform (and an Igor
    wave folder's a measured current made into levels): it starts at the holding level (so that is the
    baseline, even when steps fill half the sweep and the median would be a step's level) and holds no
    test pulse (so no step is left out for being early).
    """
    from dataclasses import replace

    from rtclassify.dsp.detector import DetectorConfig, detect_steps

    command_pa = np.asarray(command_pa, dtype=np.float64)
    from_epochs = layout.startswith(LEVEL_LAYOUTS)
    if from_epochs and len(command_pa):  # a noise-free waveform: any change of level is a step
        on, off = detect_steps(command_pa, replace(DetectorConfig(), i_threshold_pa=EPOCH_STEP_PA),
                               holding_pa=float(command_pa[0]))
    else:
        on, off = detect_steps(command_pa)
    first = 0.0 if from_epochs else TEST_PULSE_END_S
    return [(int(a), int(b)) for a, b in zip(on, off) if a / fs > first]


def is_short(onset: int, offset: int, fs: float) -> bool:
    lo, hi = (int(round(ms * fs / 1000.0)) for ms in SHORT_STEP_MS)
    return lo <= offset - onset <= hi


def find_short_square(name: str, command_pa: np.ndarray | None, fs: float, layout: str = "") -> StepFinding | None:
    """The short-square step of a sweep, or None when the sweep is not one.

    A sweep counts when its command shows exactly one step after the test pulse and that step is
    short (1-5 ms); `by_name` tells whether its name or code agrees. The step position always comes
    from the command: a name alone gives no onset, so such a sweep without a usable command is None.
    """
    steps = steps_after_test_pulse(command_pa, fs, layout) if command_pa is not None and len(command_pa) else []
    if len(steps) != 1 or not is_short(*steps[0], fs):
        return None
    (onset, offset), = steps
    return StepFinding(onset, offset, is_short_square_name(name), True)
