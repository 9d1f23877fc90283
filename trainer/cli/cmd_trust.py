"""`python -m trainer trust`: the shape envelope and the default --min-confidence of model files, chosen
on the calibration split (trainer/trust.py)."""
import json
from pathlib import Path

import click

from trainer.cli.cmd_rigs import parse_models
from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA


@click.command()
@click.option("--model", "models", multiple=True, required=True, metavar="TASK=FILE",
              help="A held-out sibling (trained without the calibration and final splits) whose answers choose "
                   "the threshold; its card gets the choice (repeatable).")
@click.option("--card-to", "card_to", multiple=True, metavar="TASK=FILE",
              help="A file of the same recipe trained on every cell (the shipped one) that gets its sibling's "
                   "choice too (repeatable).")
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True)
@click.option("--seed", default=11, show_default=True, help="Seed of the chains drawn.")
@click.option("--out", "out_dir", default="docs/confidence", show_default=True,
              help="Folder for trust.json: the calibration-split curves the choices were read from.")
@click.option("--explore", "shares", default=None, metavar="S,S,...",
              help="Only print, for each share of the 25 °C reading (e.g. 0,0.1,0.25), the confident-wrong rates "
                   "and coverage the --model files give on the calibration split (or --cells); nothing written.")
@click.option("--cells", type=click.Choice(["calibration", "final"]), default="calibration", show_default=True,
              help="With --explore: the split to read (final: to report a choice made on calibration, once).")
def trust(models, card_to, data_dir, metadata_dir, seed, out_dir, shares, cells):
    """Fit the shape envelope and choose the default --min-confidence of each model on the calibration split.

    The shape envelope (the development cells' windows, through random rigs) goes into every file's
    envelope; each class's ceiling is the precision, vouched for at 90%, of the development folds'
    out-of-fold answers at p >= 0.9 of that class (docs/report-dev/predictions.npz, with the file's
    output shift and temperature): the card's `trust.class_ceiling`; then each sibling's answers on the calibration cells,
    through the rigs the confident-wrong target is judged on, give the lowest top probability at which at
    most 3% of the answers kept are wrong: the card's `trust.min_confidence`. Minutes on a 2-core CPU.
    """
    import tempfile

    from tqdm import tqdm

    from rtclassify.model.file_format import load_model, update_card
    from rtclassify.model.trust import DEFAULTS
    from trainer.cli.common import fold_groups, load
    from trainer.evaluate import shipping_split
    from dataclasses import replace

    import numpy as np

    from trainer.trust import (CEILING_AT, CEILING_QUANTILE, CONFIDENCE_CONDITIONS, TARGET_ERROR, chained_windows,
                               choose_min_confidence, class_ceilings, condition_answers, development_answers,
                               fit_shape, load_with_trust, target_ratio)

    siblings, shipped = parse_models(models, "--model"), parse_models(card_to, "--card-to")
    data = load(data_dir, 50_000.0)
    final, calibration = shipping_split(data, fold_groups("donor", metadata_dir, data))
    if shares is not None:
        from trainer.trust import explore_shares

        with tempfile.TemporaryDirectory() as tmp:
            for task, files in siblings.items():
                for r in explore_shares(files, data, final if cells == "final" else calibration,
                                        [float(s) for s in shares.split(",")], seed, tmp):
                    click.echo(f"{task} share {r['share']:g}: confident wrong pooled {r['pooled']:.1%} of "
                               f"{r['answers']}, worst condition {r['worst']:.1%}; as recorded: answers at p >= 0.9 "
                               f"{r['coverage_as_recorded']:.0%}, balanced accuracy {r['balanced_accuracy_as_recorded']:.3f}")
        return
    click.echo("shape envelope: development cells through random rigs ...", err=True)
    shape = fit_shape(chained_windows(data, ~final & ~calibration, seed), chained_windows(data, calibration, seed + 1))
    every = [f for files in (*siblings.values(), *shipped.values()) for f in files]
    for path in every:  # the shape envelope in; an earlier choice out (the siblings answer without it)
        envelope = dict(load_model(path).card.get("envelope") or {})
        update_card(path, {"envelope": {**envelope, "shape": shape}, "trust": dict(DEFAULTS)})
    report = {"shape_threshold": shape["threshold"], "conditions": list(CONFIDENCE_CONDITIONS),
              "target_error": TARGET_ERROR, "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for task, files in tqdm(siblings.items(), desc="models", unit="task"):
            plain = load_model(files[0])  # its card: the defaults, no ceiling yet
            ceiling, per_class = class_ceilings(*development_answers(plain, data, final))
            answers = [condition_answers(load_with_trust(f, outside_prior_share=0.0), data, calibration,  # untempered:
                                         CONFIDENCE_CONDITIONS, seed, tmp) for f in files]  # settled below
            by_condition = {n: tuple(np.concatenate([a[n][k] for a in answers]) for k in range(3))
                            for n in CONFIDENCE_CONDITIONS}
            held = replace(plain.trust, class_ceiling=ceiling)
            settled = {n: (held.settle(p, o), t) for n, (p, t, o) in by_condition.items()}
            before = target_ratio({n: (plain.trust.settle(p, o), t) for n, (p, t, o) in by_condition.items()})
            after = target_ratio(settled)
            chosen, curve = choose_min_confidence(np.concatenate([p for p, _ in settled.values()]),
                                                  np.concatenate([t for _, t in settled.values()]))
            section = {**DEFAULTS, "min_confidence": chosen, "class_ceiling": ceiling.tolist(),
                       "chosen_on": f"class_ceiling: per predicted class, the {CEILING_QUANTILE:.0%} quantile of the "
                                    f"precision of the development folds' out-of-fold answers at p >= {CEILING_AT} "
                                    "(docs/report-dev/predictions.npz, with this file's output shift and temperature); "
                                    "min_confidence: "
                                    "the calibration split (one development donor in 8, never trained on) through "
                                    f"{', '.join(CONFIDENCE_CONDITIONS)}, read by the held-out sibling(s): the lowest "
                                    f"top probability whose kept answers are at most {TARGET_ERROR:.0%} wrong "
                                    "(python -m trainer trust; docs/confidence.md)"}
            for path in files + shipped.get(task, []):
                update_card(path, {"trust": section})
            report["tasks"][task] = {"min_confidence": chosen, "answers": sum(len(t) for _, t in settled.values()),
                                     "curve": curve, "class_ceiling": dict(zip(plain.classes, per_class)),
                                     "target_ratio": {"without": round(before, 3), "with": round(after, 3)}}
            click.echo(f"{task}: class ceilings {dict(zip(plain.classes, ceiling.tolist()))}; min_confidence {chosen:g}; "
                       f"distance from the confident-wrong target on the calibration split {before:.2f} without "
                       f"the ceilings, {after:.2f} with (1: on target)", err=True)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "trust.json").write_text(json.dumps(report, indent=1))
