"""Agreement of rtclassify's step-family features with the Allen Institute's own extractor (IPFX) on the
shared long-step files: the measurement behind the choice of feature code (docs/cells.md).

Both read the same sweeps (rtclassify's readers: membrane potential in mV, the command in pA); IPFX's
LongSquareAnalysis gets the sweeps whose first long step starts and ends where the file's first one
does (it takes one stimulus window for a family), with its Allen settings (dV/dt threshold 20 mV/ms,
threshold at 5% of the upstroke, subthreshold steps from -100 pA) and no digital filter (its 10 kHz
Bessel needs more than 20 kHz sampling). IPFX is not a dependency of rtclassify (licence and
pins, see docs/cells.md): run this in an environment that has both,

    pip install ipfx && python -m bench.features_agreement --out docs/cells/ipfx_agreement.json
"""
import json
from pathlib import Path

import click
import numpy as np

FILES = ("abf-recordings/171116sh_0018.abf", "abf-recordings/171116sh_0019.abf", "abf-recordings/17o05028_ic_steps.abf",
         "abf-recordings/File_axon_5.abf", "lab-cells/ferguson2015_PYR5_rebound.abf")
COMPARED = ("threshold_i_long_square", "latency", "threshold_v_long_square", "peak_v_long_square",
            "fast_trough_v_long_square", "trough_v_long_square", "upstroke_downstroke_ratio_long_square",
            "f_i_curve_slope", "adaptation", "avg_isi", "sag", "tau", "ri", "vrest")


def ours(sweeps) -> dict:
    from rtclassify.features.family import family_features
    from rtclassify.features.sweeps import family_of

    return family_features(family_of(sweeps))


def first_step_family(sweeps):
    """(start_s, end_s, [(t, v, i)]) of the sweeps whose first long step matches the first one's window."""
    from rtclassify.features.sweeps import long_steps

    window, chosen = None, []
    for s in sweeps:
        found = long_steps(s)
        if not found:
            continue
        window = window or found[0]
        if found[0] == window:
            t = np.arange(len(s.response)) / s.fs
            chosen.append((t, s.response, s.command))
        elif abs(found[0][0] - window[0]) < 2 and len(s.command):  # the same step, a sample apart
            chosen.append((np.arange(len(s.response)) / s.fs, s.response, s.command))
    fs = sweeps[0].fs
    return window[0] / fs, window[1] / fs, chosen


def ipfx_features(sweeps) -> dict:
    from ipfx.feature_extractor import SpikeFeatureExtractor, SpikeTrainFeatureExtractor
    from ipfx.stimulus_protocol_analysis import LongSquareAnalysis
    from ipfx.sweep import Sweep, SweepSet

    start, end, family = first_step_family(sweeps)
    fs = sweeps[0].fs
    ss = SweepSet([Sweep(t, v, i, "CurrentClamp", fs) for t, v, i in family])
    spx = SpikeFeatureExtractor(start=start, end=end, filter=None)
    sptx = SpikeTrainFeatureExtractor(start=start, end=end, baseline_interval=min(0.1, 0.9 * start))
    lsa = LongSquareAnalysis(spx, sptx, subthresh_min_amp=-100.0, require_subthreshold=False,
                             require_suprathreshold=False)
    f = lsa.analyze(ss)
    out = {name: float("nan") for name in COMPARED}
    out["vrest"] = f.get("v_baseline", float("nan"))
    if "rheobase_i" in f:
        rheo, hero = f["rheobase_sweep"], f["hero_sweep"]
        spikes = f["spikes_set"][int(rheo.name)] if hasattr(rheo, "name") else None
        out.update({"threshold_i_long_square": f["rheobase_i"], "latency": rheo.get("latency", np.nan),
                    "f_i_curve_slope": f.get("fi_fit_slope", np.nan), "adaptation": hero.get("adapt", np.nan),
                    "avg_isi": hero.get("mean_isi", np.nan) * 1e3})
        if spikes is not None and len(spikes):
            first = spikes.iloc[0]
            out.update({"threshold_v_long_square": first["threshold_v"], "peak_v_long_square": first["peak_v"],
                        "fast_trough_v_long_square": first["fast_trough_v"], "trough_v_long_square": first["trough_v"],
                        "upstroke_downstroke_ratio_long_square": first["upstroke_downstroke_ratio"]})
    if "sag" in f:
        out["sag"] = f["sag"]
    if "tau" in f:
        out["tau"] = f["tau"] * 1e3
    if "input_resistance" in f:
        out["ri"] = f["input_resistance"]
    return {k: float(v) for k, v in out.items()}


@click.command()
@click.option("--data", "data_dir", default="../shared/data", show_default=True)
@click.option("--out", "out_path", default="docs/cells/ipfx_agreement.json", show_default=True)
def main(data_dir, out_path):
    """Compare rtclassify's and IPFX's features of the shared long-step files; write JSON and a table."""
    import ipfx

    from rtclassify.formats.recordings import read_recording

    rows = {}
    for name in FILES:
        path = Path(data_dir) / name
        sweeps = [s for s in read_recording(path) if s.clamp_mode == "current" and not s.refusal]
        a, b = ours(sweeps), ipfx_features(sweeps)
        rows[Path(name).name] = {k: {"rtclassify": a[k], "ipfx": b[k]} for k in COMPARED}
        click.echo(f"{name}: " + ", ".join(f"{k} {a[k]:.4g}/{b[k]:.4g}" for k in COMPARED))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps({"ipfx_version": ipfx.__version__, "files": rows}, indent=1))
    lines = ["| feature | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for k in COMPARED:
        cells = []
        for r in rows.values():
            x, y = r[k]["rtclassify"], r[k]["ipfx"]
            cells.append("-" if np.isnan(x) and np.isnan(y) else f"{x:.4g} / {y:.4g}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    Path(out_path).with_suffix(".md").write_text("rtclassify / IPFX " + ipfx.__version__ + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
