"""Repeated stratified k-fold cross-validation, grouped by donor, every method on identical folds.

Each cell holds one AP, so a fold of cells is a fold of windows: no cell is ever in both the
training and the test side; grouped by donor (the report's default), no mouse either. The folds
are drawn once per stage (stage_folds: over the development cells, or every cell; stratified on
genetic class, dendrite type and sampling rate) and shared by every task and method; the
early-stopping validation split is drawn inside each training fold.
"""
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from trainer.baseline import compute_ap_features, fit_predict_gbm, read_allen_features
from trainer.data import SpikeSet
from trainer.fit import (TrainConfig, fit_distilled, fit_ensemble, fit_member, predict_proba, split_validation,
                         with_auxiliary_cells)
from trainer.labels import AUX_TARGETS, get_task
from trainer.metrics import score_repeats

RATE_STRATA = {  # stratum name -> (native rate in Hz, classes scored)
    "genetic5": {"50 kHz, 5 classes": (50_000, ("Exc", "Ndnf", "Pvalb", "Sst", "Vip")),
                 "200 kHz, Exc/Pvalb/Sst": (200_000, ("Exc", "Pvalb", "Sst"))},
    "broad2": {"50 kHz": (50_000, ("Exc", "Inh")), "200 kHz": (200_000, ("Exc", "Inh"))},
    "exc_pvalb_sst": {"50 kHz": (50_000, ("Exc", "Pvalb", "Sst")), "200 kHz": (200_000, ("Exc", "Pvalb", "Sst"))},
}


def rate_stratum_masks(task_name: str, classes, y: np.ndarray, native_fs_hz: np.ndarray) -> dict:
    """{stratum: ((N,) bool its cells, [its classes present])} for RATE_STRATA's strata of the task: the
    cells recorded natively at the stratum's rate whose true class (y (N,), -1 none) is one it scores,
    and those of its classes that they hold. Strata without cells are left out."""
    out = {}
    for name, (rate, scored) in RATE_STRATA.get(task_name, {}).items():
        idx = [list(classes).index(c) for c in scored]
        cells = (native_fs_hz == rate) & np.isin(y, idx)
        if cells.any():
            out[name] = (cells, [k for k in idx if np.any(y[cells] == k)])
    return out


def score_rate_strata(task_name: str, classes, y: np.ndarray, preds: np.ndarray, native_fs_hz: np.ndarray,
                      n_boot: int, seed: int = 0) -> dict:
    """{stratum: trainer.metrics.score_repeats of the decisions preds (R, N) against y (N,) within it}
    (rate_stratum_masks): the sampling-rate confound's honest figures, each rate over its own classes."""
    return {name: score_repeats(y[cells], preds[:, cells], len(classes), classes_present=present, n_boot=n_boot,
                                seed=seed)
            for name, (cells, present) in rate_stratum_masks(task_name, classes, y, native_fs_hz).items()}


@dataclass
class Method:
    """One entry of the comparison."""

    name: str
    task: str
    kind: str  # "cnn", "gbm_ap" (features of the AP) or "gbm_allen" (Allen's ef__ features)
    cfg: TrainConfig = field(default_factory=TrainConfig)
    transfer_from: str | None = None  # name of a CNN method whose fold models initialise this one
    repeats: int | None = None  # None: all repeats; fewer for costly ablations
    description: str = ""


TRAIN_ONLY = -1  # fold index of a cell that trains every fold and is never tested (the final stage's dev cells)
UNUSED = -2  # fold index of a cell that is neither trained on nor tested (the dev stage's final cells)
FINAL_SEED = 20261203  # draws the final split, once: never change it, or its cells will have been seen
FINAL_SHARE = 5  # one donor in FINAL_SHARE (stratified) is in the final split


def strata_key(data: SpikeSet, k: int) -> np.ndarray:
    """(N,) stratum of every cell for the folds: genetic class x dendrite type x rate, strata with
    fewer than k cells pooled into one (they cannot be spread over k folds)."""
    g5 = data.labels(get_task("genetic5"))
    key = np.array([f"{a}|{b}|{c:g}" for a, b, c in zip(g5, data.dendrite_types, data.fs_hz)])
    values, counts = np.unique(key, return_counts=True)
    return np.where(np.isin(key, values[counts < k]), "rare", key)


def split_by_group(key: np.ndarray, k: int, seed: int, groups: np.ndarray | None):
    """The (train, test) index pairs of a stratified k-fold split, grouped when groups (N,) is given."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(key)), key)
    return StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(key)), key, groups)


def make_folds(data: SpikeSet, k: int, repeats: int, seed: int, groups: np.ndarray | None = None,
               cells: np.ndarray | None = None) -> np.ndarray:
    """(repeats, N) fold index of every cell, stratified on genetic class x dendrite type x rate.

    groups: (N,) group of each cell (its donor): all cells of a group fall in one fold, so that no
    test cell shares a mouse with a training cell (StratifiedGroupKFold keeps the strata as even
    as the groups allow). None: folds by cell. cells: (N,) bool, the cells to fold (default all);
    the others get UNUSED.
    """
    cells = np.ones(len(data.specimen_ids), bool) if cells is None else cells
    idx = np.flatnonzero(cells)
    key = strata_key(data, k)[idx]
    folds = np.full((repeats, len(cells)), UNUSED, dtype=int)
    for r in range(repeats):
        for f, (_, test) in enumerate(split_by_group(key, k, seed + r, None if groups is None else groups[idx])):
            folds[r, idx[test]] = f
    return folds


def final_split(data: SpikeSet, groups: np.ndarray | None) -> np.ndarray:
    """(N,) bool: the cells of the frozen final split, one donor in FINAL_SHARE (stratified like the
    folds, whole donors; by cell when groups is None), drawn with FINAL_SEED so that every run sees
    the same cells. Every choice is made on the others (the dev stage); the final stage scores once."""
    _, test = next(iter(split_by_group(strata_key(data, FINAL_SHARE), FINAL_SHARE, FINAL_SEED, groups)))
    out = np.zeros(len(data.specimen_ids), bool)
    out[test] = True
    return out


CALIBRATION_SEED = 20261205  # draws the shipped models' calibration split from the development cells
CALIBRATION_SHARE = 8  # one development donor in CALIBRATION_SHARE


def shipping_split(data: SpikeSet, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """((N,) bool final, (N,) bool calibration): the frozen final split (final_split), and one donor in
    CALIBRATION_SHARE of the development cells, stratified the same way. A shipped model trains on the
    rest; its temperature is fitted on the calibration cells and the final split scores it once
    (`python -m trainer rigs`), so the file itself has seen neither."""
    final = final_split(data, groups)
    dev = np.flatnonzero(~final)
    key = strata_key(data, CALIBRATION_SHARE)[dev]
    _, test = next(iter(split_by_group(key, CALIBRATION_SHARE, CALIBRATION_SEED,
                                       None if groups is None else groups[dev])))
    calibration = np.zeros(len(final), bool)
    calibration[dev[test]] = True
    return final, calibration


def stage_folds(stage: str, data: SpikeSet, k: int, repeats: int, seed: int,
                groups: np.ndarray | None) -> np.ndarray:
    """(repeats, N) fold index of every cell for one evaluation stage:
    "dev": k-fold over the development cells, the final split UNUSED (every choice is made here);
    "final": one fold, the final split tested once per repeat (each repeat a new training seed) by
    networks trained on all development cells (TRAIN_ONLY);
    "all": k-fold over every cell (the reports made before the split existed)."""
    if stage == "all":
        return make_folds(data, k, repeats, seed, groups)
    final = final_split(data, groups)
    if stage == "dev":
        return make_folds(data, k, repeats, seed, groups, cells=~final)
    if stage == "final":
        return np.tile(np.where(final, 0, TRAIN_ONLY), (repeats, 1))
    raise ValueError(f"unknown stage {stage!r}: dev, final or all")


def tested_folds(folds_row: np.ndarray) -> np.ndarray:
    """The fold indices of one repeat that are tested (not TRAIN_ONLY, not UNUSED)."""
    return np.unique(folds_row[folds_row >= 0])


def training_side(folds_row: np.ndarray, f: int) -> np.ndarray:
    """(N,) bool: the cells a network of fold f trains on (every used cell outside fold f)."""
    return (folds_row != f) & (folds_row != UNUSED)


def run_method(method: Method, data: SpikeSet, folds: np.ndarray, seed: int, fold_models: dict,
               metadata_dir: Path | None, tick, teacher_cache: Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Out-of-fold probabilities (R, N, K) for the task's cells (NaN rows for cells outside the task),
    and for a distilled CNN those of its teacher ensemble too (else None).

    fold_models: {(method name, repeat, fold): [networks]} filled for CNN methods, read for transfer.
    teacher_cache: folder where the teacher networks of distilled methods are kept per fold, so that
    student variants (width, temperature, weight) are evaluated without retraining the teachers.
    """
    task = get_task(method.task)
    y = data.labels(task)
    y_train = data.training_labels(task, method.cfg.related_lines)  # related-line cells: training only
    n_classes = len(task.classes)
    repeats = method.repeats or folds.shape[0]
    probs = np.full((repeats, len(y), n_classes), np.nan)
    distil = method.kind == "cnn" and method.cfg.distilled
    teacher_probs = np.full_like(probs, np.nan) if distil else None
    features = method_features(method, data, metadata_dir)
    with_aux = method.kind == "cnn" and method.cfg.aux_weight > 0  # the members' auxiliary output
    for r in range(repeats):
        for f in tested_folds(folds[r]):
            side = training_side(folds[r], f)
            test = (folds[r] == f) & (y >= 0)
            train = side & (y_train >= 0)
            # cells outside the task on the training side only: nothing of the test fold is seen
            outside = side & (y_train < 0)
            fit_seed = fold_seed(seed, r, f)
            if method.cfg.train_fraction < 1:
                train, outside = subsample_training_side(train, outside, y_train, method.cfg.train_fraction, fit_seed)
            if method.kind == "cnn":
                init = fold_models.get((method.transfer_from, r, f)) if method.transfer_from else None
                if method.transfer_from and init is None:
                    raise RuntimeError(f"{method.name}: run {method.transfer_from} first (transfer source)")
                args = (data.windows[train], y_train[train], n_classes, data.spec.fs_hz, method.cfg, fit_seed, init)
                aux = {}
                if with_aux:  # its classes from the training side only
                    labels = data.auxiliary_labels(method.cfg.aux_target, train | outside)
                    aux = {"aux": labels[train], "unlabelled_aux": labels[outside]}
                if distil:
                    x, y_fit, aux_fit = with_auxiliary_cells(*args[:2], aux.get("aux"), data.windows[outside],
                                                             aux.get("unlabelled_aux"), method.cfg)
                    cells = cells_digest(data.specimen_ids[train | outside])  # the training side, exactly
                    teachers = fit_cached_teachers(method, (x, y_fit) + args[2:], teacher_cache, cells, aux_fit)
                    student, _ = fit_distilled(*args, teachers=teachers, unlabelled=data.windows[outside])
                    nets = [student.model]
                    teacher_probs[r, test] = predict_proba(teachers, data.windows[test])
                else:
                    nets = [fit.model for fit in fit_ensemble(*args, unlabelled=data.windows[outside], **aux)]
                fold_models[(method.name, r, f)] = nets
                probs[r, test] = predict_proba(nets, data.windows[test])
            else:
                probs[r, test] = fit_predict_gbm(features[train], y_train[train], features[test], n_classes, fit_seed)
            tick()
    return probs, teacher_probs


def subsample_training_side(train: np.ndarray, outside: np.ndarray, y: np.ndarray, fraction: float,
                            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For a learning curve: the masks (N,) of a fold's labelled training cells (train) and of its
    training-side cells outside the task (outside), each cut to `fraction` of its cells, the labelled
    ones stratified by class y (N,); the test fold is untouched, so sizes compare on identical cells."""
    rng = np.random.default_rng(seed + 7919)  # not the networks' own stream of this seed
    kept = []
    for mask, labels in ((train, y), (outside, np.zeros(len(y), dtype=int))):
        idx = np.flatnonzero(mask)
        keep, _ = split_validation(labels[idx], 1.0 - fraction, rng)
        out = np.zeros_like(mask)
        out[idx[keep]] = True
        kept.append(out)
    return kept[0], kept[1]


TEACHER_FIELDS_IGNORED = ("members", "distil", "distil_weight", "distil_temperature", "distil_unlabelled",
                          "student_channels", "student_depth", "student_epochs", "student_mixup", "logit_adjust",
                          "threads")
# options added after caches existed: left out of the key at their neutral value, so older caches stay valid
TEACHER_FIELDS_NEUTRAL = {"sampling_power": 0.0, "related_lines": False, "member_options": (), "kernel": 5,
                          "aug_subsample": 0.0, "aux_weight": 0.0, "aux_target": "dendrite",
                          "train_fraction": 1.0}


def fold_seed(seed: int, repeat: int, fold: int) -> int:
    """The seed of the networks trained for one fold of one repeat."""
    return int(seed + 100 * repeat + fold)


def cells_digest(specimen_ids) -> str:
    """A short digest of a set of cells (order ignored): the cache key's record of which cells a
    network was trained on."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(map(str, specimen_ids))).encode()).hexdigest()[:16]


def teacher_key(method: Method, fit_seed: int, member: int, cells: str) -> str:
    """Cache key of one teacher, member number `member` of a fold: everything that shapes it, with the
    member's own options (TrainConfig.member) — not the student's options, nor the ensemble's size:
    member m is the same network whether there are 5 or 8, and whatever the other members' options.
    cells: cells_digest of the fold's training-side cells, exactly: a teacher is only ever reused for
    a fold that trains on the same cells, so no fold (of another split, grouping or fold count) can
    be handed a teacher that saw its test cells. The data folder is not in the key otherwise."""
    import hashlib
    import json

    cfg = {k: v for k, v in method.cfg.member(member).to_dict().items()
           if k not in TEACHER_FIELDS_IGNORED and not (k in TEACHER_FIELDS_NEUTRAL and v == TEACHER_FIELDS_NEUTRAL[k])}
    blob = json.dumps({"task": method.task, "cfg": cfg, "transfer_from": method.transfer_from, "cells": cells,
                       "seed": int(fit_seed), "member": int(member)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def teacher_path(cache: Path, method: Method, fit_seed: int, member: int, cells: str) -> Path:
    """The cache file of one teacher (see teacher_key)."""
    return cache / f"{teacher_key(method, fit_seed, member, cells)}.pt"


def fit_cached_teachers(method: Method, args: tuple, cache: Path | None, cells: str,
                        aux: np.ndarray | None = None) -> list:
    """The fold's method.cfg.members teacher networks, each loaded from the cache folder when there
    (one file per member) or trained by fit_member and then cached.
    args: the fit_members arguments (x, y, n_classes, fs_hz, cfg, fit_seed, init); cells: cells_digest
    of the fold's training-side cells; aux: auxiliary labels of x (TrainConfig.aux_weight; x then
    also holds cells outside the task, y = -1)."""
    import torch

    x, y, n_classes, fs_hz, cfg, fit_seed, init = args
    nets = []
    for m in range(cfg.members):
        path = teacher_path(cache, method, fit_seed, m, cells) if cache else None
        if path is not None and path.exists():
            nets.append(torch.load(path, weights_only=False).eval())
            continue
        net = fit_member(x, y, n_classes, fs_hz, cfg, fit_seed, m, init, aux=aux).model
        if path is not None:
            cache.mkdir(parents=True, exist_ok=True)
            torch.save(net, path.with_suffix(".tmp"))  # then renamed: an interrupted run leaves no half file
            path.with_suffix(".tmp").replace(path)
        nets.append(net)
    return nets


def cached_member_probs(method: Method, data: SpikeSet, folds: np.ndarray, seed: int, cache: Path,
                        members: int) -> np.ndarray:
    """(R, members, N, K) out-of-fold probabilities of each cached teacher of a distilled method on its
    test fold (NaN rows: cells outside the task), read from the cache run_method fills; inference only.
    A missing file raises FileNotFoundError naming it and the command that trains it."""
    import torch

    y = data.labels(get_task(method.task))
    n_folds = int(folds.max()) + 1
    out = np.full((folds.shape[0], members, len(y), len(get_task(method.task).classes)), np.nan)
    for r in range(folds.shape[0]):
        for f in tested_folds(folds[r]):
            test = (folds[r] == f) & (y >= 0)
            cells = cells_digest(data.specimen_ids[training_side(folds[r], f)])
            for m in range(members):
                path = teacher_path(cache, method, fold_seed(seed, r, f), m, cells)
                if not path.is_file():
                    raise FileNotFoundError(
                        f"{path}: teacher {m} of repeat {r}, fold {f} is not cached; train it with `python -m "
                        f"trainer evaluate --methods {method.name} --ensemble {members} --repeats {folds.shape[0]} "
                        f"--folds {n_folds} "
                        f"--teacher-cache {cache}` (and the same --set and --group-by options)")
                out[r, m, test] = predict_proba([torch.load(path, weights_only=False)], data.windows[test])
    return out


def method_features(method: Method, data: SpikeSet, metadata_dir: Path | None) -> np.ndarray | None:
    if method.kind == "gbm_ap":
        return compute_ap_features(data.windows, data.spec.fs_hz, data.spec.n_before)
    if method.kind == "gbm_allen":
        if metadata_dir is None:
            raise ValueError(f"{method.name}: needs the Allen metadata folder (--metadata)")
        return read_allen_features(metadata_dir, data.specimen_ids)[0]
    if method.kind != "cnn":
        raise ValueError(f"{method.name}: unknown kind {method.kind!r}; valid: cnn, gbm_ap, gbm_allen")
    return None


def evaluate_method(method: Method, data: SpikeSet, folds: np.ndarray, seed: int, fold_models: dict,
                    metadata_dir: Path | None, tick, teacher_cache: Path | None, n_boot: int) -> dict:
    """The report rows of one method, {name: (scores, out-of-fold probabilities (R, N, K))}: the method
    itself and, for a distilled CNN, its teacher ensemble ("<name>_teachers"). Arguments as run_method."""
    probs, teacher_probs = run_method(method, data, folds, seed, fold_models, metadata_dir, tick, teacher_cache)
    scored = [(method, probs)] + ([(teachers_of(method), teacher_probs)] if teacher_probs is not None else [])
    rows = {}
    for m, p in scored:
        scores = evaluate_scores(m, data, p, folds, n_boot)
        if m.kind == "cnn":
            scores["config"] = m.cfg.to_dict()
        rows[m.name] = (scores, p)
    return rows


def evaluate_scores(method: Method, data: SpikeSet, probs: np.ndarray, folds: np.ndarray, n_boot: int) -> dict:
    """score_method with the calibration of the stage the folds (R, N) belong to: cross-fitted over
    the folds, or in the final stage the shipped model's temperature."""
    return score_method(method, data, probs, n_boot, folds, shipped_temperature(method) if is_final(folds) else None)


def is_final(folds: np.ndarray) -> bool:
    """Folds of the final stage: one tested fold, trained on everything else."""
    return len(np.unique(folds[folds >= 0])) == 1 and (folds == TRAIN_ONLY).any()


def shipped_temperature(method: Method) -> float | None:
    """The calibration temperature of the shipped model a method's networks stand for (cnn_genetic5 ->
    rtclassify/model/shipped/genetic5.pt; chosen on the dev stage), None for any other method."""
    if method.name != f"cnn_{method.task}":
        return None
    from rtclassify.model.file_format import load_model

    card = load_model(method.task, runtime="torchscript").card
    return (card.get("calibration") or {}).get("temperature")


def teachers_of(method: Method) -> Method:
    """The teacher ensemble a distilled method's network learns from, as a method of its own."""
    return replace(method, name=method.name + "_teachers", cfg=replace(method.cfg, distil=False, logit_adjust=0.0),
                   description=f"the ensemble of {method.cfg.members} that {method.name} is distilled from "
                               "(M times its inference cost)")


def score_method(method: Method, data: SpikeSet, probs: np.ndarray, n_boot: int, folds: np.ndarray | None = None,
                 temperature: float | None = None) -> dict:
    """Pooled and rate-stratified scores of one method's out-of-fold predictions probs (R, N, K), their
    calibration and the errors by Cre line and rate. folds (R, N): the folds that made them, for a
    temperature cross-fitted over the folds (cross-validation stages); temperature: the one to apply
    instead (the final stage: the shipped model's, chosen on the dev stage); neither: raw only."""
    from trainer.calibration import apply_temperature, calibration_scores, crossfit_temperature

    task = get_task(method.task)
    y = data.labels(task)
    cells = (y >= 0) & np.isfinite(probs).all(axis=(0, 2))  # tested cells of the task (a stage may test few)
    preds = probs[:, cells].argmax(axis=2)
    out = {"task": method.task, "classes": list(task.classes), "kind": method.kind,
           "description": method.description, "repeats": int(probs.shape[0]),
           "pooled": score_repeats(y[cells], preds, len(task.classes), n_boot=n_boot)}
    out["rate_strata"] = score_rate_strata(method.task, task.classes, y[cells], preds, data.fs_hz[cells], n_boot)
    masks = {name: m for name, (m, _) in rate_stratum_masks(method.task, task.classes, y[cells],
                                                             data.fs_hz[cells]).items()}
    calibrated, temperatures = None, []
    if folds is not None and len(np.unique(folds[folds >= 0])) > 1:
        calibrated, temperatures = crossfit_temperature(probs, np.where(cells, y, -1), folds)
        calibrated = calibrated[:, cells]
    elif temperature is not None:
        calibrated, temperatures = apply_temperature(probs[:, cells], temperature), [temperature]
    out["calibration"] = calibration_scores(probs[:, cells], y[cells], masks, calibrated, temperatures)
    out["errors_by_line"] = errors_by_line(data, y, preds, cells, task.classes)
    return out


def errors_by_line(data: SpikeSet, y: np.ndarray, preds: np.ndarray, cells: np.ndarray, classes) -> list[dict]:
    """Per Cre line, true class and native rate of the scored cells: cells, errors (mean over the
    repeats' decisions preds (R, n scored)) and what the errors were called, most errors first."""
    lines, rates, truth = data.line_names[cells], data.fs_hz[cells], y[cells]
    rows = []
    for key in sorted(set(zip(lines, truth, rates))):
        sel = (lines == key[0]) & (truth == key[1]) & (rates == key[2])
        wrong = preds[:, sel] != key[1]
        called = np.bincount(preds[:, sel][wrong], minlength=len(classes)) / len(preds)
        rows.append({"line": str(key[0]), "class": classes[key[1]], "fs_khz": float(key[2]) / 1000,
                     "cells": int(sel.sum()), "errors": float(wrong.sum() / len(preds)),
                     "called": {c: float(n) for c, n in zip(classes, called) if n}})
    return sorted(rows, key=lambda r: (-r["errors"], r["line"]))


def default_methods(cfg: TrainConfig, shipped: dict, ablation_repeats: int = 1) -> list[Method]:
    """The comparison of the report: ours, the published ablations, transfer, broad2, 3-class, baselines.

    shipped: the TrainConfig of each shipped task ({"genetic5": ..., "broad2": ...}), so that the
    shipped configurations are the ones evaluated; every other CNN is a single network trained
    with `cfg` (early stopping on a validation split).
    """
    from dataclasses import replace

    ours = shipped["genetic5"]
    broad = shipped["broad2"]
    one = replace(cfg, members=1)
    abl = dict(repeats=ablation_repeats)
    return [
        Method("cnn_genetic5", "genetic5", "cnn", ours,
               description=f"shipped configuration: v + dV/dt, FFT re, FFT im; {describe_model(ours)}; "
                           f"{describe_training(ours)}"),
        Method("cnn_broad2", "broad2", "cnn", broad,
               description=f"shipped configuration, spiny vs aspiny; {describe_model(broad)}; "
                           f"{describe_training(broad)}"),
        Method("cnn_genetic5_transfer", "genetic5", "cnn", one, transfer_from="cnn_broad2",
               description="first broad2 network fine-tuned to genetic5 (published transfer), single network"),
        Method("cnn_exc_pvalb_sst", "exc_pvalb_sst", "cnn", one, description="Exc/Pvalb/Sst, single network"),
        Method("ablation_v", "genetic5", "cnn", replace(one, branches=("v",)), **abl,
               description="published ablation: raw voltage only"),
        Method("ablation_v_re", "genetic5", "cnn", replace(one, branches=("v", "fft_re")), **abl,
               description="published ablation: raw + real FFT"),
        Method("ablation_v_im", "genetic5", "cnn", replace(one, branches=("v", "fft_im")), **abl,
               description="published ablation: raw + imaginary FFT"),
        Method("ablation_v_re_im", "genetic5", "cnn", replace(one, branches=("v", "fft_re", "fft_im")), **abl,
               description="published architecture: raw + real + imaginary FFT, single network"),
        Method("ablation_ours_single", "genetic5", "cnn", one, **abl,
               description=f"ours (v + dV/dt, re, im), single network; {describe_training(one)}"),
        Method("single_shipped_training", "genetic5", "cnn", replace(ours, members=1), **abl,
               description=f"ours, single network; {describe_training(ours)}"),
        Method("single_related_lines", "genetic5", "cnn", replace(ours, members=1, related_lines=True), **abl,
               description=f"ours, single network; {describe_training(replace(ours, related_lines=True))}"),
        Method("gbm_ap_genetic5", "genetic5", "gbm_ap", description="AP features + gradient boosting"),
        Method("gbm_allen_genetic5", "genetic5", "gbm_allen",
               description="Allen ef__ features (all sweeps of the cell) + gradient boosting"),
        Method("gbm_ap_broad2", "broad2", "gbm_ap", description="AP features + gradient boosting"),
        Method("gbm_allen_broad2", "broad2", "gbm_allen", description="Allen ef__ features + gradient boosting"),
        Method("gbm_ap_exc_pvalb_sst", "exc_pvalb_sst", "gbm_ap", description="AP features + gradient boosting"),
    ]


def describe_training(cfg: TrainConfig) -> str:
    stop = (f"early stopping on a {cfg.val_fraction:.0%} validation split (patience {cfg.patience})"
            if cfg.val_fraction > 0 else f"fixed {cfg.max_epochs} epochs on all training cells")
    extra = ", plus cells of related Cre lines in training (trainer/cre_related.csv)" if cfg.related_lines else ""
    if cfg.train_fraction < 1:
        extra += f", on {cfg.train_fraction:.0%} of each fold's training-side cells (learning curve)"
    if cfg.mixup > 0:
        extra += f", mixup (alpha {cfg.mixup:g})"
    if cfg.aux_weight > 0:
        what = AUX_TARGETS.get(cfg.aux_target, cfg.aux_target)
        extra += (f", an auxiliary {what} output (loss weight {cfg.aux_weight:g} beside the classes' 1) learnt on "
                  "every training-side cell incl. other Cre lines and dropped after training")
    if cfg.distilled:
        student = cfg.student()
        mixup = f", mixup (alpha {student.mixup:g})" if student.mixup != cfg.mixup else ""
        extra += (f"; student: {student.max_epochs} epochs{mixup}, {cfg.distil_weight:.0%} of its loss "
                  f"from the teachers (temperature {cfg.distil_temperature:g})")
        if cfg.distil_unlabelled:
            extra += ", also on the training side's cells outside the task (teachers' outputs only)"
    if cfg.logit_adjust:
        extra += f"; output bias lowered by {cfg.logit_adjust:g} x log(class frequency) after training"
    return f"{stop}, class weights (1/frequency)^{cfg.balance_power:g}{extra}"


def describe_model(cfg: TrainConfig) -> str:
    if cfg.member_options:
        return describe_model(replace(cfg, member_options=())) + f" (members' own options: {list(cfg.member_options)})"
    if cfg.distilled:
        channels, depth = cfg.student().channels, cfg.student().depth
        if (channels, depth) != (cfg.channels, cfg.depth):
            return (f"one {channels}-channel, {depth}-layer network distilled from an ensemble of {cfg.members} "
                    f"{cfg.channels}-channel, {cfg.depth}-layer ones")
        return f"one network distilled from an ensemble of {cfg.members}"
    return f"ensemble of {cfg.members}" if cfg.members > 1 else "single network"
