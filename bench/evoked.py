"""The detector against the audited truth of real evoked-spike recordings:

    python -m bench.evoked [--folder ../shared/data/evoked-spikes] [--json out.json]

Scores `rtclassify detect`'s spike / no spike against `spike_audited` of `cases.csv`
(`ambiguous` cases left out), the peak-time error where a peak time is annotated and the AP is in
view, and lists every disagreement. The test suite holds the same figures
(tests/test_detection.py).
"""
import argparse
import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "evoked-spikes"


@dataclass
class EvokedScore:
    cases: int = 0  # unambiguous cases scored
    agree: int = 0
    hidden: int = 0  # spikes found with their peak obscured by a pulse edge
    peak_errors_ms: list = field(default_factory=list)
    misses: list = field(default_factory=list)  # (name, audited, found)

    @property
    def agreement(self) -> float:
        return self.agree / self.cases if self.cases else float("nan")

    def summary(self) -> dict:
        errors = np.asarray(self.peak_errors_ms)
        return {"cases": self.cases, "agree": self.agree, "agreement": round(self.agreement, 4),
                "hidden_spikes": self.hidden, "peak_error_ms_median": float(np.median(errors)) if len(errors) else None,
                "peak_error_ms_p90": float(np.percentile(errors, 90)) if len(errors) else None,
                "peak_errors_n": len(errors), "misses": self.misses}


def score_evoked(folder: Path) -> EvokedScore:
    """Run the detector on every case of `folder` (the evoked-spikes layout) and score it."""
    from rtclassify.dsp.detector import detect_trace

    with open(folder / "cases.csv", newline="") as f:
        cases = list(csv.DictReader(f))
    score = EvokedScore()
    for case in cases:
        if case["spike_audited"] == "ambiguous":
            continue
        z = np.load(folder / f"{case['name']}.npz")
        fs = float(case["fs"])
        det = detect_trace(z["v"].astype(np.float64) * 1e3, z["i"].astype(np.float64) * 1e12, fs)
        found = len(det.peaks) > 0
        audited = case["spike_audited"] == "spike"
        score.cases += 1
        score.agree += found == audited
        score.hidden += bool(found and det.obscured[0])
        if found != audited:
            score.misses.append((case["name"], case["spike_audited"], "spike" if found else "no_spike"))
        if found and audited and not det.obscured[0] and case["peak_time"]:
            expected_s = float(case["peak_time"]) - float(case["t0"])
            score.peak_errors_ms.append(abs(det.peaks[0] / fs - expected_s) * 1e3)
    return score


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if not (a.folder / "cases.csv").exists():
        p.error(f"{a.folder}: no cases.csv here (the evoked-spikes layout of ../shared/data/README.md)")
    out = score_evoked(a.folder).summary()
    print(f"{out['agree']}/{out['cases']} agree with spike_audited ({out['agreement']:.1%}); "
          f"{out['hidden_spikes']} spikes found with their peak hidden by a pulse edge; "
          f"peak-time error median {out['peak_error_ms_median']:.3f} ms over {out['peak_errors_n']} annotated peaks")
    for name, audited, found in out["misses"]:
        print(f"  {name}: audited {audited}, detector {found}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
