import csv
import json
from collections import Counter

import numpy as np
import click
import pytest
import torch
from click.testing import CliRunner

from rtclassify.model.network import TripleInputCNN
from rtclassify.model.file_format import hash_weights, load_model
from rtclassify.dsp.windows import WindowSpec
from trainer.data import load_spike_set
from trainer.export import export_model
from trainer.fit import (TrainConfig, augment, build_network, fit_ensemble, predict_proba, split_validation,
                         transfer_features)
from trainer.labels import TASKS, assign_labels, get_task


def table(spikes_dir):
    with open(spikes_dir / "cells.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_strict_mapping_reproduces_the_documented_counts(spikes_dir):
    cells = table(spikes_dir)
    g5 = Counter(assign_labels([c["line_name"] for c in cells], [c["dendrite_type"] for c in cells], TASKS["genetic5"]))
    # ../shared/data/README.md: Exc ~ 560, Pvalb ~ 132, Sst ~ 87, Vip ~ 68, Ndnf ~ 50
    assert abs(g5["Exc"] - 560) <= 5 and g5["Pvalb"] == 132 and g5["Sst"] == 87
    assert g5["Vip"] == 68 and g5["Ndnf"] == 50
    broad = assign_labels([c["line_name"] for c in cells], [c["dendrite_type"] for c in cells], TASKS["broad2"])
    sparse = [b for b, c in zip(broad, cells) if c["dendrite_type"] == "sparsely spiny"]
    assert sparse and all(b is None for b in sparse)


def test_double_transgenic_lines_are_not_guessed():
    labels = assign_labels(["Nos1-CreERT2|Sst-IRES-FlpO", "Sst-IRES-Cre", "Rorb-IRES2-Cre", "Rorb-IRES2-Cre"],
                           ["aspiny", "aspiny", "spiny", "aspiny"], TASKS["genetic5"])
    assert labels == [None, "Sst", "Exc", None]


def test_related_lines_add_training_cells_without_touching_scored_labels(spikes_dir):
    data = load_spike_set(spikes_dir, WindowSpec())
    g5 = TASKS["genetic5"]
    strict, extended = data.labels(g5), data.training_labels(g5, related_lines=True)
    assert np.array_equal(extended[strict >= 0], strict[strict >= 0])  # scored cells keep their class
    added = (strict < 0) & (extended >= 0)
    lines = set(data.line_names[added])
    assert lines == {"Chat-IRES-Cre-neo", "Chrna2-Cre_OE25", "Nos1-CreERT2|Sst-IRES-FlpO",
                     "Slc32a1-T2A-FlpO|Vipr2-IRES2-Cre"}
    assert set(extended[data.line_names == "Chat-IRES-Cre-neo"]) == {g5.classes.index("Vip")}
    assert not np.isin(data.line_names[added], ["Htr3a-Cre_NO152", "Nkx2-1-CreERT2"]).any()  # mixed lines stay out
    assert np.array_equal(data.training_labels(g5, related_lines=False), strict)
    broad = TASKS["broad2"]  # labelled by dendrite type: nothing to add
    assert np.array_equal(data.training_labels(broad, related_lines=True), data.labels(broad))


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="genetic5"):
        get_task("genetic6")


def test_validation_split_is_stratified_and_disjoint():
    y = np.repeat([0, 1, 2], [100, 20, 3])
    tr, va = split_validation(y, 0.15, np.random.default_rng(0))
    assert not set(tr) & set(va) and len(tr) + len(va) == len(y)
    assert Counter(y[va].tolist()) == {0: 15, 1: 3}
    assert set(y[tr]) == {0, 1, 2}


def test_transfer_copies_all_but_the_output_layer():
    torch.manual_seed(0)
    src = TripleInputCNN(150, 50_000, 2, channels=4)
    dst = TripleInputCNN(150, 50_000, 5, channels=4)
    transfer_features(src, dst)
    assert torch.equal(src.time_branch[0].weight, dst.time_branch[0].weight)
    assert dst.classifier.weight.shape == (5, 64)


def small_subset(spikes_dir):
    data = load_spike_set(spikes_dir, WindowSpec())
    y = data.labels(TASKS["broad2"])
    keep = np.concatenate([np.flatnonzero(y == 0)[:30], np.flatnonzero(y == 1)[:30]])
    return data, y, keep


def test_training_is_seeded_and_exports_a_loadable_model(spikes_dir, tmp_path):
    data, y, keep = small_subset(spikes_dir)
    cfg = TrainConfig(channels=4, max_epochs=3, patience=3, members=2)
    a = fit_ensemble(data.windows[keep], y[keep], 2, data.spec.fs_hz, cfg, seed=3)
    b = fit_ensemble(data.windows[keep], y[keep], 2, data.spec.fs_hz, cfg, seed=3)
    assert hash_weights(a[0].model) == hash_weights(b[0].model)
    assert hash_weights(a[0].model) != hash_weights(a[1].model)
    y_sub = np.full_like(y, -1)
    y_sub[keep] = y[keep]
    card = export_model([f.model for f in a], "tiny-broad2", TASKS["broad2"], data, y_sub, cfg, tmp_path / "m.pt",
                        source=str(spikes_dir))
    assert card["training_data"]["n_cells"] == 60
    loaded = load_model(str(tmp_path / "m.pt"))
    assert loaded.classes == ["Exc", "Inh"] and loaded.card["architecture"]["networks_in_file"] == 2
    with torch.inference_mode():
        p_file = loaded.module(torch.from_numpy(data.windows[keep[:5]])).numpy()
    assert np.allclose(p_file, predict_proba([f.model for f in a], data.windows[keep[:5]]), atol=1e-5)


def test_rate_confound_is_visible_in_the_data(spikes_dir):
    """The folds must be stratified on rate: Ndnf cells exist only at 50 kHz."""
    data = load_spike_set(spikes_dir, WindowSpec())
    y = data.labels(TASKS["genetic5"])
    ndnf = TASKS["genetic5"].classes.index("Ndnf")
    assert set(data.fs_hz[y == ndnf]) == {50_000.0}


def test_distilled_ensemble_exports_one_network(spikes_dir, tmp_path):
    data, y, keep = small_subset(spikes_dir)
    cfg = TrainConfig(channels=4, max_epochs=3, patience=3, members=2, distil=True, val_fraction=0.0)
    fits = fit_ensemble(data.windows[keep], y[keep], 2, data.spec.fs_hz, cfg, seed=5)
    assert len(fits) == 1  # the student alone
    y_sub = np.full_like(y, -1)
    y_sub[keep] = y[keep]
    card = export_model([fits[0].model], "tiny-distilled", TASKS["broad2"], data, y_sub, cfg, tmp_path / "d.pt",
                        source=str(spikes_dir))
    assert card["architecture"]["networks_in_file"] == 1 and "distilled" in card["architecture"]["type"]
    assert "unlabelled_cells_distilled" not in card["training_data"]  # the option was off
    from trainer.export import summarise_training_data
    summary = summarise_training_data(data, y_sub, TASKS["broad2"], "x", distilled_unlabelled=True)
    assert summary["unlabelled_cells_distilled"] == int((y_sub < 0).sum()) > 0
    loaded = load_model(str(tmp_path / "d.pt"))
    with torch.inference_mode():
        p_file = loaded.module(torch.from_numpy(data.windows[keep[:5]])).numpy()
    assert np.allclose(p_file, predict_proba([fits[0].model], data.windows[keep[:5]]), atol=1e-5)
    assert np.allclose(p_file.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_rate_transfer_command_writes_report_and_plot(tmp_path):
    from helpers import write_spike_folder
    from trainer.__main__ import main

    data = write_spike_folder(tmp_path / "spikes", n_per_model=12, rates=(200_000.0, 50_000.0))
    out = tmp_path / "transfer"
    result = CliRunner().invoke(main, ["transfer", "--data", str(data), "--fractions", "0.5,1", "--repeats", "2",
                                       "--epochs", "3", "--finetune-epochs", "2", "--channels", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    res = json.loads((out / "transfer.json").read_text())
    assert res["source_cells"] == 18 and res["target_cells"] == 18
    for key in ("zero_shot", "transfer_0.5", "scratch_0.5", "transfer_1", "scratch_1"):
        v = res["balanced_accuracy"][key]["values"]
        assert len(v) == 2 and all(0.0 <= x <= 1.0 for x in v)
    assert (out / "transfer.png").stat().st_size > 5000 and "| 0.5 |" in (out / "transfer.md").read_text()


def test_smoothing_augmentation_low_passes_without_shifting_the_window():
    from trainer.fit import smooth_randomly

    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 50)
    x[:, 25] = 10.0  # an impulse: smoothing spreads it, keeps its area and its place
    y = smooth_randomly(x, 1.0, gen)
    assert y.shape == x.shape and torch.allclose(y.sum(dim=1), x.sum(dim=1), atol=1e-4)
    assert torch.all(y[:, 25] < 10.0) and torch.all(y.argmax(dim=1) == 25)
    assert torch.equal(smooth_randomly(x, 0.0, gen), x)


def test_mixup_and_distillation_losses_are_finite_and_differ_from_plain():
    from trainer.fit import batch_loss

    torch.manual_seed(0)
    net = TripleInputCNN(150, 50_000.0, 3, channels=4, depth=2)
    teacher = TripleInputCNN(150, 50_000.0, 3, channels=4, depth=2).eval()
    x, y = torch.randn(8, 150) * 10 - 60, torch.arange(8) % 3
    loss_fn = torch.nn.CrossEntropyLoss()
    plain = batch_loss(net, loss_fn, x, y, TrainConfig(), torch.Generator().manual_seed(1))
    mixed = batch_loss(net, loss_fn, x, y, TrainConfig(mixup=0.4), torch.Generator().manual_seed(1))
    taught = batch_loss(net, loss_fn, x, y, TrainConfig(), torch.Generator().manual_seed(1), [teacher])
    assert all(torch.isfinite(v) for v in (plain, mixed, taught))
    assert not torch.isclose(plain, mixed) and not torch.isclose(plain, taught)


def test_distilled_evaluation_reuses_cached_teachers_and_narrows_the_student(tmp_path):
    from dataclasses import replace

    from helpers import write_spike_folder
    from trainer.evaluate import Method, make_folds, run_method

    data = load_spike_set(write_spike_folder(tmp_path / "spikes", n_per_model=6), WindowSpec())
    folds = make_folds(data, 2, 1, 0)
    cfg = TrainConfig(channels=8, depth=2, max_epochs=2, val_fraction=0.0, members=2, distil=True, threads=1)
    cache = tmp_path / "teachers"
    first = run_method(Method("m", "broad2", "cnn", cfg), data, folds, 0, {}, None, lambda: None, cache)
    assert len(list(cache.glob("*.pt"))) == 4  # one file per fold and member
    models = {}
    narrow = replace(cfg, student_channels=4)
    second = run_method(Method("m", "broad2", "cnn", narrow), data, folds, 0, models, None, lambda: None, cache)
    assert len(list(cache.glob("*.pt"))) == 4  # the student option does not change the teachers' key
    np.testing.assert_allclose(first[1], second[1], atol=1e-6)  # the same teachers, loaded
    student = models[("m", 0, 0)][0]
    assert student.time_branch[0].out_channels == 4
    cached = {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    more = run_method(Method("m", "broad2", "cnn", replace(cfg, members=3)), data, folds, 0, {}, None, lambda: None,
                      cache)
    assert len(list(cache.glob("*.pt"))) == 6  # only the third member trained and added per fold
    assert all(p.stat().st_mtime_ns == t for p, t in cached.items())  # the first two loaded, not retrained
    assert not np.allclose(more[1], first[1], atol=1e-4)  # three teachers, not the two cached


def test_epoch_order_shuffles_or_draws_class_balanced():
    from trainer.fit import epoch_order

    y = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    plain = epoch_order(y, 3, 0.0, torch.Generator().manual_seed(0))
    assert sorted(plain.tolist()) == list(range(1000))  # each window once
    drawn = epoch_order(y, 3, 1.0, torch.Generator().manual_seed(0))
    shares = torch.bincount(y[drawn], minlength=3).double() / len(drawn)
    assert len(drawn) == 1000 and torch.all((shares > 0.25) & (shares < 0.42))  # about a third each
    half = torch.bincount(y[epoch_order(y, 3, 0.5, torch.Generator().manual_seed(0))], minlength=3)
    assert half[0] > half[1] > half[2] > 10  # softened: still ordered, the rare class far above its 1%


def test_predictions_file_keeps_other_methods_on_update_and_only_for_the_same_cells(tmp_path):
    from trainer.report import write_predictions

    ids = np.array([11, 12, 13])
    a, b = np.random.rand(2, 3, 5), np.random.rand(1, 3, 2)
    write_predictions({"a": a}, ids, tmp_path)
    write_predictions({"b": b}, ids, tmp_path, update=True)
    with np.load(tmp_path / "predictions.npz") as f:
        assert sorted(f.files) == ["a", "b", "specimen_id"]
        np.testing.assert_allclose(f["a"], a, atol=1e-6)
        np.testing.assert_array_equal(f["specimen_id"], ids)
    write_predictions({"b": b}, np.array([11, 12, 14]), tmp_path, update=True)  # other cells: old arrays dropped
    with np.load(tmp_path / "predictions.npz") as f:
        assert sorted(f.files) == ["b", "specimen_id"]


def test_unlabelled_windows_teach_the_student_through_the_teachers_only():
    from dataclasses import replace

    from trainer.fit import batch_loss, fit_distilled

    torch.manual_seed(0)
    net = TripleInputCNN(150, 50_000.0, 3, channels=4, depth=2)
    teacher = TripleInputCNN(150, 50_000.0, 3, channels=4, depth=2).eval()
    x = torch.randn(8, 150) * 10 - 60
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)
    cfg = TrainConfig(mixup=0.4)
    no_labels = batch_loss(net, loss_fn, x, torch.full((8,), -1), cfg, torch.Generator().manual_seed(1), [teacher])
    assert torch.isfinite(no_labels) and no_labels > 0  # the teachers' part alone
    no_labels.backward()  # and it trains
    assert net.classifier.weight.grad.abs().sum() > 0

    rng = np.random.default_rng(0)
    xs = (rng.normal(size=(24, 150)) * 10 - 60).astype(np.float32)
    ys = np.arange(24) % 3
    cfg = TrainConfig(channels=4, depth=2, max_epochs=2, val_fraction=0.0, members=2, distil=True, threads=1,
                      distil_unlabelled=True)
    student, teachers = fit_distilled(xs, ys, 3, 50_000.0, cfg, seed=1, unlabelled=xs[:10] + 5)
    assert all(np.isfinite(h[0]) for h in student.history) and len(student.history) == 2
    longer, _ = fit_distilled(xs, ys, 3, 50_000.0, replace(cfg, student_epochs=3), seed=1, teachers=teachers)
    assert len(longer.history) == 3  # the student's own number of epochs
    assert replace(cfg, mixup=0.2, student_mixup=1.0).student().mixup == 1.0  # the student's own mixing
    assert replace(cfg, mixup=0.2).student().mixup == 0.2  # or the teachers'
    with pytest.raises(ValueError, match="need teachers"):
        from trainer.fit import fit_network
        fit_network(xs, ys, 3, 50_000.0, cfg, seed=1, unlabelled=xs[:10])


def test_logit_adjustment_lowers_the_frequent_classes_by_their_log_frequency():
    from trainer.fit import adjust_logits

    torch.manual_seed(0)
    net = TripleInputCNN(150, 50_000.0, 3, channels=4, depth=2).eval()
    x = torch.randn(5, 150) * 10 - 60
    y = np.array([0] * 80 + [1] * 16 + [2] * 4)
    with torch.inference_mode():
        before = net(x)
    adjust_logits(net, y, 3, 0.0)
    with torch.inference_mode():
        assert torch.equal(net(x), before)  # strength 0: untouched
    adjust_logits(net, np.concatenate([y, [-1, -1]]), 3, 0.5)  # unlabelled cells do not count
    with torch.inference_mode():
        after = net(x)
    expected = -0.5 * np.log([0.8, 0.16, 0.04])
    np.testing.assert_allclose((after - before).numpy(), np.tile(expected, (5, 1)), atol=1e-5)


def test_bias_sweep_command_scores_saved_predictions_and_names_what_is_missing(tmp_path):
    from helpers import write_spike_folder
    from trainer.__main__ import main as trainer_main
    from trainer.report import write_predictions

    spikes = write_spike_folder(tmp_path / "spikes", n_per_model=4)
    data = load_spike_set(spikes, WindowSpec())
    y = data.labels(TASKS["genetic5"])
    probs = np.full((1, len(y), 5), 0.05)
    probs[0, np.arange(len(y)), np.maximum(y, 0)] = 0.8  # every cell right
    report = tmp_path / "report"
    write_predictions({"m": probs, "m_teachers": probs}, data.specimen_ids, report)
    (report / "report.json").write_text(json.dumps({
        "methods": {"m": {"task": "genetic5", "config": {"logit_adjust": 0.25}}, "other": {"task": "genetic5"}},
        "meta": {"window": {"fs_hz": 50_000.0}}}))
    run = CliRunner().invoke(trainer_main, ["bias-sweep", "--report-dir", str(report), "--method", "m",
                                            "--data", str(spikes), "--shifts", "0,0.1"])
    assert run.exit_code == 0, run.output
    assert "already lowered by 0.25" in run.output and "+0.000 (total 0.250): 1.000 / 1.000" in run.output
    assert "decisions equal to its teachers' (given the same shift): 1.000" in run.output
    run = CliRunner().invoke(trainer_main, ["bias-sweep", "--report-dir", str(report), "--method", "other",
                                            "--data", str(spikes)])
    assert run.exit_code != 0 and "has no other" in run.output


def test_evaluate_settings_override_one_option_of_a_shipped_configuration():
    from trainer.cli.common import apply_settings

    configs = {"genetic5": TrainConfig(mixup=0.2), "broad2": TrainConfig()}
    out = apply_settings(configs, ["genetic5.student_channels=32", "genetic5.branches=[\"v\"]",
                                   "genetic5.distil_unlabelled=true"])
    assert out["genetic5"].student_channels == 32 and out["genetic5"].branches == ("v",)
    assert out["genetic5"].distil_unlabelled is True and out["genetic5"].mixup == 0.2
    assert out["broad2"] == configs["broad2"] and configs["genetic5"].student_channels is None  # copies
    for bad, words in [("genetic5.student_channels", "TASK.OPTION=VALUE"), ("genetic9.depth=3", "unknown task"),
                       ("genetic5.width=3", "unknown option 'width'")]:
        with pytest.raises(click.BadParameter, match=words):
            apply_settings(configs, [bad])


def test_logit_adjustment_never_promotes_a_class_without_training_cells():
    from trainer.fit import log_class_frequencies

    np.testing.assert_allclose(log_class_frequencies(np.array([0, 0, 0, 2, -1]), 3), [np.log(0.75), 0, np.log(0.25)])


def test_member_options_vary_the_members_and_keep_the_cache_of_unvaried_ones(tmp_path):
    from helpers import write_spike_folder
    from trainer.evaluate import Method, make_folds, run_method, teacher_key

    base = TrainConfig(channels=8, depth=2, max_epochs=2, val_fraction=0.0, members=2, distil=True, threads=1)
    varied = TrainConfig(**{**base.__dict__, "member_options": ({}, {"channels": 4})})
    assert varied.member(0) == base and varied.member(1).channels == 4 and varied.member(3).channels == 4
    assert TrainConfig.from_dict(json.loads(json.dumps(varied.to_dict()))) == varied  # as stored in a card
    key = lambda cfg, m: teacher_key(Method("m", "broad2", "cnn", cfg), 0, m, "cells")  # noqa: E731
    assert key(varied, 0) == key(base, 0)  # an unvaried member is the same cached network
    assert key(varied, 1) != key(base, 1)
    assert key(TrainConfig(**{**base.__dict__, "kernel": 7}), 0) != key(base, 0)
    assert build_network(150, 50_000, 2, TrainConfig(channels=4, kernel=7)).time_branch[0].kernel_size == (7,)
    data = load_spike_set(write_spike_folder(tmp_path / "spikes", n_per_model=6), WindowSpec())
    models = {}
    run_method(Method("m", "broad2", "cnn", varied), data, make_folds(data, 2, 1, 0), 0, models, None,
               lambda: None, tmp_path / "teachers")
    widths = sorted(torch.load(p, weights_only=False).time_branch[0].out_channels
                    for p in (tmp_path / "teachers").glob("*.pt"))
    assert widths == [4, 4, 8, 8]  # per fold, one member as configured and one narrowed


def test_evaluate_method_reports_a_distilled_method_and_its_teachers(tmp_path):
    from helpers import write_spike_folder
    from trainer.evaluate import Method, evaluate_method, make_folds

    data = load_spike_set(write_spike_folder(tmp_path / "spikes", n_per_model=6), WindowSpec())
    cfg = TrainConfig(channels=4, depth=2, max_epochs=1, val_fraction=0.0, members=2, distil=True, threads=1,
                      logit_adjust=0.25)
    rows = evaluate_method(Method("m", "broad2", "cnn", cfg), data, make_folds(data, 2, 1, 0), 0, {}, None,
                           lambda: None, None, n_boot=10)
    assert list(rows) == ["m", "m_teachers"]
    (student, p_student), (teachers, p_teachers) = rows["m"], rows["m_teachers"]
    assert student["config"]["distil"] and not teachers["config"]["distil"]
    assert teachers["config"]["logit_adjust"] == 0.0 and "distilled from" in teachers["description"]
    assert p_student.shape == p_teachers.shape and not np.allclose(p_student, p_teachers)
    assert 0.0 <= student["pooled"]["balanced_accuracy"] <= 1.0


def test_cached_member_probs_reproduce_the_teacher_ensemble_and_name_a_missing_teacher(tmp_path):
    from helpers import write_spike_folder
    from trainer.evaluate import Method, cached_member_probs, make_folds, run_method

    data = load_spike_set(write_spike_folder(tmp_path / "spikes", n_per_model=6), WindowSpec())
    folds = make_folds(data, 2, 1, 0)
    cfg = TrainConfig(channels=4, depth=2, max_epochs=1, val_fraction=0.0, members=3, distil=True, threads=1)
    method, cache = Method("m", "broad2", "cnn", cfg), tmp_path / "teachers"
    _, teacher_probs = run_method(method, data, folds, 0, {}, None, lambda: None, cache)
    members = cached_member_probs(method, data, folds, 0, cache, 3)
    assert members.shape == (1, 3, len(data.windows), 2)
    np.testing.assert_allclose(members.mean(axis=1), teacher_probs, atol=1e-6)  # NaN rows in the same places
    with pytest.raises(FileNotFoundError, match="teacher 3 of repeat 0, fold 0 is not cached.*--ensemble 4"):
        cached_member_probs(method, data, folds, 0, cache, 4)


def test_member_subsets_are_scored_in_combination_order():
    from trainer.metrics import score_member_subsets

    y = np.array([0, 0, 1, 1])
    right, wrong = np.eye(2)[y] * 0.8 + 0.1, np.eye(2)[1 - y] * 0.8 + 0.1
    leaning = np.tile([0.6, 0.4], (4, 1))  # class 0 everywhere, weakly
    scores = score_member_subsets(np.stack([right, right, leaning, wrong]), y, 2)
    assert scores.shape == (6, 2)
    assert tuple(scores[0]) == (1.0, 1.0)  # members 0 and 1: both right
    # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): right + wrong ties -> class 0 (half right); leaning + wrong: all wrong
    np.testing.assert_allclose(scores[:, 0], [1.0, 1.0, 0.5, 1.0, 0.5, 0.0])


def test_teacher_spread_command_names_the_missing_teacher_and_a_bad_size(tmp_path):
    from helpers import write_spike_folder
    from trainer.__main__ import main as trainer_main

    spikes = write_spike_folder(tmp_path / "spikes", n_per_model=6)
    base = ["teacher-spread", "--data", str(spikes), "--teacher-cache", str(tmp_path / "empty"), "--folds", "2",
            "--repeats", "1", "--group-by", "cell"]  # synthetic cells have no donor
    run = CliRunner().invoke(trainer_main, base)
    assert run.exit_code != 0 and "teacher 0 of repeat 0, fold 0 is not cached" in run.output
    run = CliRunner().invoke(trainer_main, base + ["--size", "9"])
    assert run.exit_code != 0 and "--size 9 must be between 1 and --members 8" in run.output
    run = CliRunner().invoke(trainer_main, base + ["--method", "ablation_v"])
    assert run.exit_code != 0 and "has no teachers" in run.output


def test_fractional_delay_moves_a_smooth_window_by_a_fraction_of_a_sample():
    from trainer.fit import delay_fractionally

    t = torch.arange(150, dtype=torch.float64)
    ap = lambda s: -65 + 90 * torch.exp(-((s - 50) / 4) ** 2) + 0.04 * s  # noqa: E731  (mV; peak at sample 50)
    delay = torch.tensor([[0.5], [-0.3], [0.0]], dtype=torch.float64)
    moved = delay_fractionally(ap(t).repeat(3, 1), delay)
    for row, d in zip(moved, delay[:, 0]):  # the ends follow the delayed line, the interior is exact
        torch.testing.assert_close(row[5:145], ap(t - d)[5:145], atol=1e-9, rtol=0)
    cfg = TrainConfig(aug_subsample=0.5, aug_shift=0, aug_gain=0, aug_offset_mv=0, aug_noise_mv=0)
    x = ap(t).float().repeat(4, 1)
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.allclose(out, x)


def test_auxiliary_spiny_output_learns_from_cells_outside_the_task_and_is_dropped_after_training():
    from dataclasses import replace

    from trainer.fit import batch_loss, fit_network, with_auxiliary_cells

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(24, 150)) * 10 - 60).astype(np.float32)
    y, aux = np.arange(24) % 3, (np.arange(24) % 3 > 0).astype(int)
    extra, extra_aux = x[:6] + 3, np.array([0, 1, -1, 1, -1, 0])
    cfg = TrainConfig(channels=4, depth=2, max_epochs=2, val_fraction=0.0, threads=1, aux_weight=0.5)
    tx, ty, ta = with_auxiliary_cells(x, y, aux, extra, extra_aux, cfg)
    assert len(tx) == 28 and list(ty[24:]) == [-1] * 4 and list(ta[24:]) == [0, 1, 1, 0]  # unknown type: left out
    np.testing.assert_array_equal(tx[24:], extra[[0, 1, 3, 5]])
    assert with_auxiliary_cells(x, y, aux, extra, extra_aux, replace(cfg, aux_weight=0.0))[2] is None

    torch.manual_seed(0)
    net = TripleInputCNN(150, 50_000.0, 3 + 2, channels=4, depth=2)
    xb, loss_fn = torch.from_numpy(x[:8]), torch.nn.CrossEntropyLoss(ignore_index=-1)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    only_aux = batch_loss(net, loss_fn, xb, torch.full((8,), -1), cfg, gen(), aux=torch.from_numpy(aux[:8]),
                          aux_outputs=2)
    assert torch.isfinite(only_aux) and only_aux > 0  # cells outside the task train the extra outputs alone
    both = batch_loss(net, loss_fn, xb, torch.from_numpy(y[:8]), replace(cfg, mixup=0.4), gen(),
                      aux=torch.from_numpy(aux[:8]), aux_outputs=2)
    assert torch.isfinite(both)

    def outputs(fit):
        with torch.inference_mode():
            return fit.model(torch.from_numpy(x)).numpy()

    plain = fit_network(x, y, 3, 50_000.0, replace(cfg, aux_weight=0.0), seed=2)
    ignored = fit_network(x, y, 3, 50_000.0, replace(cfg, aux_weight=0.0), seed=2, aux=aux)
    np.testing.assert_array_equal(outputs(plain), outputs(ignored))  # weight 0: the labels change nothing
    taught = fit_network(*with_auxiliary_cells(x, y, aux, extra, extra_aux, cfg)[:2], 3, 50_000.0, cfg, seed=2,
                         aux=ta)
    assert taught.model.classifier.out_features == 3  # the auxiliary outputs are gone
    assert all(np.isfinite(h[0]) for h in taught.history)
    assert not np.allclose(outputs(taught), outputs(plain), atol=1e-3)
    early = fit_network(tx, ty, 3, 50_000.0, replace(cfg, val_fraction=0.3), seed=2, aux=ta)
    assert np.isfinite(early.history[0][1])  # validation on labelled cells only
    train, val = split_validation(ty, 0.3, np.random.default_rng(0))
    assert set(range(24, 28)) <= set(train) and all(ty[val] >= 0)


def test_evaluation_with_the_auxiliary_output_caches_its_own_teachers(tmp_path):
    from dataclasses import replace

    from helpers import write_spike_folder
    from trainer.evaluate import Method, make_folds, run_method, teacher_key

    folder = write_spike_folder(tmp_path / "spikes", n_per_model=12)
    table = (folder / "cells.csv").read_text().splitlines()
    # two cells of a Cre line outside exc_pvalb_sst: spiny/aspiny labels only
    table[1:3] = [row.replace("Rorb-IRES2-Cre", "Gad2-IRES-Cre").replace("spiny", "aspiny") for row in table[1:3]]
    (folder / "cells.csv").write_text("\n".join(table) + "\n")
    data = load_spike_set(folder, WindowSpec())
    folds = make_folds(data, 2, 1, 0)
    cfg = TrainConfig(channels=4, depth=2, max_epochs=2, val_fraction=0.0, members=2, distil=True, threads=1,
                      distil_unlabelled=True)
    key = lambda c: teacher_key(Method("m", "exc_pvalb_sst", "cnn", c), 0, 0, "cells")  # noqa: E731
    assert key(replace(cfg, aux_weight=0.0)) == key(cfg) != key(replace(cfg, aux_weight=0.3))
    plain = run_method(Method("m", "exc_pvalb_sst", "cnn", cfg), data, folds, 0, {}, None, lambda: None,
                       tmp_path / "cache")
    models = {}
    aux = run_method(Method("m", "exc_pvalb_sst", "cnn", replace(cfg, aux_weight=0.3)), data, folds, 0, models,
                     None, lambda: None, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 8  # 2 folds x 2 members, for each option
    scored = data.labels(get_task("exc_pvalb_sst")) >= 0
    assert np.isnan(aux[1][0, ~scored]).all() and np.isfinite(aux[1][0, scored]).all()
    assert not np.allclose(aux[1][0, scored], plain[1][0, scored], atol=1e-4)
    assert models[("m", 0, 0)][0].classifier.out_features == 3
    lines = run_method(Method("m", "exc_pvalb_sst", "cnn", replace(cfg, aux_weight=0.3, aux_target="line")), data,
                       folds, 0, {}, None, lambda: None, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 12 and np.isfinite(lines[1][0, scored]).all()


def test_auxiliary_labels_are_dendrite_types_or_the_cre_lines_of_the_training_side(monkeypatch):
    import trainer.labels
    from trainer.labels import auxiliary_labels

    lines = ["A", "A", "B", "A", "B", "C", ""]
    dendrites = ["spiny", "aspiny", "sparsely spiny", "spiny", "", "aspiny", "aspiny"]
    everyone = np.ones(7, dtype=bool)
    assert list(auxiliary_labels(lines, dendrites, "dendrite", everyone)) == [0, 1, -1, 0, -1, 1, 1]
    monkeypatch.setattr(trainer.labels, "AUX_MIN_CELLS", 2)
    assert list(auxiliary_labels(lines, dendrites, "line", everyone)) == [0, 0, 1, 0, 1, -1, -1]
    train = np.array([True, True, True, True, False, True, True])  # B has one training-side cell only
    assert list(auxiliary_labels(lines, dendrites, "line", train)) == [0, 0, -1, 0, -1, -1, -1]
    with pytest.raises(ValueError, match="valid targets"):
        auxiliary_labels(lines, dendrites, "layer", everyone)


def test_line_layer_labels_pool_a_lines_rare_layers_and_fall_back_to_the_line_without_layers(monkeypatch):
    import trainer.labels
    from trainer.labels import auxiliary_labels

    monkeypatch.setattr(trainer.labels, "AUX_MIN_CELLS", 2)
    lines = ["A", "A", "A", "A", "A", "B", "B", "C", ""]
    layers = ["5", "5", "4", "2/3", "", "5", "4", "5", "5"]
    everyone = np.ones(9, dtype=bool)
    # classes, alphabetical: A|5, A|other (layers 4, 2/3 and unknown: one cell each), B|other
    assert list(auxiliary_labels(lines, [""] * 9, "line_layer", everyone, layers)) == [0, 0, 1, 1, 1, 2, 2, -1, -1]
    train = np.array([True, False] + [True] * 7)  # A|5 has one training-side cell: it joins A|other
    assert list(auxiliary_labels(lines, [""] * 9, "line_layer", train, layers)) == [0, 0, 0, 0, 0, 1, 1, -1, -1]
    # no layer column: every line is "<line>|other", i.e. the "line" labels
    assert (list(auxiliary_labels(lines, [""] * 9, "line_layer", everyone))
            == list(auxiliary_labels(lines, [""] * 9, "line", everyone)))


def test_learning_curve_subsample_keeps_a_stratified_share_of_the_training_side_only():
    from trainer.evaluate import subsample_training_side

    y = np.array([0] * 40 + [1] * 20 + [2] * 8 + [-1] * 32)
    side = np.arange(len(y)) % 5 != 0  # fold 0 is the test fold
    train, outside = side & (y >= 0), side & (y < 0)
    kept_train, kept_outside = subsample_training_side(train, outside, y, 0.75, seed=3)
    assert not (kept_train & ~train).any() and not (kept_outside & ~outside).any()  # never a test cell
    for c in range(3):
        assert kept_train[y == c].sum() == round(0.75 * train[y == c].sum())
    assert kept_outside.sum() == round(0.75 * outside.sum())
    again = subsample_training_side(train, outside, y, 0.75, seed=3)
    assert (again[0] == kept_train).all() and (again[1] == kept_outside).all()
    assert not (subsample_training_side(train, outside, y, 0.75, seed=4)[0] == kept_train).all()


def test_log_curve_fit_recovers_a_line_in_log_cells():
    from trainer.metrics import fit_log_curve

    n = np.array([100, 200, 400])
    slope, at = fit_log_curve(n, 0.6 + 0.05 * np.log2(n / 100), 800)
    assert slope == pytest.approx(0.05) and at == pytest.approx(0.75)
    # two repeats at each size, one 0.02 above and one 0.02 below the line: fitted together, the same line
    line = 0.6 + 0.05 * np.log2(n / 100)
    slope, at = fit_log_curve(n, np.stack([line + 0.02, line - 0.02], axis=1), 800)
    assert slope == pytest.approx(0.05) and at == pytest.approx(0.75)


def test_learning_curve_command_scores_each_size_and_refuses_other_folds(tmp_path):
    from helpers import write_spike_folder
    from trainer.__main__ import main as trainer_main
    from trainer.report import write_predictions

    spikes = write_spike_folder(tmp_path / "spikes", n_per_model=4)
    data = load_spike_set(spikes, WindowSpec())
    y = data.labels(TASKS["genetic5"])
    cells = np.flatnonzero(y >= 0)
    dirs = []
    for fraction, n_wrong, seed in ((0.5, 2, 0), (1.0, 0, 0), (1.0, 0, 1)):
        probs = np.full((1, len(y), 5), 0.05)
        right = np.maximum(y, 0).copy()
        right[cells[:n_wrong]] = (right[cells[:n_wrong]] + 1) % 5  # the smaller size misclassifies two cells
        probs[0, np.arange(len(y)), right] = 0.8
        report = tmp_path / f"r{fraction}_{seed}"
        write_predictions({"m": probs}, data.specimen_ids, report)
        (report / "report.json").write_text(json.dumps({
            "methods": {"m": {"task": "genetic5", "config": {"train_fraction": fraction}}},
            "meta": {"window": {"fs_hz": 50_000.0}, "folds": 5, "repeats": 1, "seed": seed}}))
        dirs.append(str(report))
    plot = tmp_path / "curve.png"
    args = ["learning-curve", "--method", "m", "--data", str(spikes), "--plot", str(plot)]
    run = CliRunner().invoke(trainer_main, args + ["--report-dir", dirs[1], "--report-dir", dirs[0]])
    assert run.exit_code == 0, run.output
    n = len(cells)
    lines = run.output.splitlines()
    assert f"{0.4 * n:6.0f} cells ( 40% of the task's)" in lines[1] and "1.000 / 1.000" not in lines[1]
    assert f"{0.8 * n:6.0f} cells ( 80% of the task's): 1.000 / 1.000" in lines[2]
    assert "per doubling" in lines[3] and plot.stat().st_size > 0
    run = CliRunner().invoke(trainer_main, args + ["--report-dir", dirs[0], "--report-dir", dirs[2]])
    assert run.exit_code != 0 and "identical test folds" in run.output


def test_a_fold_is_never_handed_a_teacher_trained_on_other_cells(tmp_path):
    """The teacher cache is keyed by the exact training-side cells: the same fold number of another
    split (cell vs donor grouping, another fold count) trains on other cells and gets its own file;
    the same split finds its teachers again."""
    from helpers import write_spike_folder
    from trainer.evaluate import Method, cells_digest, make_folds, run_method

    data = load_spike_set(write_spike_folder(tmp_path / "spikes", n_per_model=6), WindowSpec())
    assert cells_digest(["2", "1"]) == cells_digest(["1", "2"]) != cells_digest(["1", "3"])
    cfg = TrainConfig(channels=4, depth=2, max_epochs=1, val_fraction=0.0, members=2, distil=True, threads=1)
    method, cache = Method("m", "broad2", "cnn", cfg), tmp_path / "teachers"
    donors = np.array([f"d{i // 2}" for i in range(len(data.specimen_ids))])  # two cells per mouse
    by_cell, by_donor = make_folds(data, 2, 1, 0), make_folds(data, 2, 1, 0, donors)
    assert not np.array_equal(by_cell, by_donor)
    for folds in (by_cell, by_donor):
        run_method(method, data, folds, 0, {}, None, lambda: None, cache)
    assert len(list(cache.glob("*.pt"))) == 8  # 2 splits x 2 folds x 2 members: nothing shared
    before = {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    run_method(method, data, by_donor, 0, {}, None, lambda: None, cache)
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")} == before  # found again, not retrained


def test_folds_grouped_by_donor_keep_each_mouse_in_one_fold(tmp_path):
    from helpers import write_spike_folder
    from trainer.data import read_donors
    from trainer.evaluate import make_folds

    data = load_spike_set(write_spike_folder(tmp_path / "spikes", n_per_model=12), WindowSpec())
    donors = np.array([f"d{i % 7}" for i in range(len(data.specimen_ids))])
    folds = make_folds(data, 3, 2, 0, donors)
    for r in range(2):
        for d in np.unique(donors):
            assert len(set(folds[r, donors == d])) == 1
    assert set(folds[0]) == {0, 1, 2}
    meta = tmp_path / "meta"
    meta.mkdir()
    ids = list(data.specimen_ids)
    rows = "".join(f"{s},{100 + k % 3}\n" for k, s in enumerate(ids[:-1]))
    (meta / "cell_types_specimen_details.csv").write_text("specimen__id,donor__id\n" + rows)
    with pytest.raises(ValueError, match=f"no donor__id for 1 cells.*{ids[-1]}"):
        read_donors(meta, data.specimen_ids)
    assert list(read_donors(meta, data.specimen_ids[:4])) == ["100", "101", "102", "100"]




def test_the_final_split_is_frozen_and_never_seen_by_the_development_stage(tmp_path):
    """Every choice is made on the dev stage, which never trains on or tests a cell of the final split;
    the final stage tests only those cells, with networks trained on every development cell and on
    nothing else; the split is the same on every run and keeps each mouse whole."""
    from helpers import write_spike_folder
    from trainer.evaluate import (TRAIN_ONLY, UNUSED, Method, cells_digest, final_split, run_method, stage_folds,
                                  teacher_path)

    data = load_spike_set(write_spike_folder(tmp_path / "spikes", n_per_model=10), WindowSpec())
    donors = np.array([f"d{i // 2}" for i in range(len(data.specimen_ids))])
    final = final_split(data, donors)
    assert np.array_equal(final, final_split(data, donors)) and 0 < final.sum() < len(final) / 2
    assert not set(donors[final]) & set(donors[~final])
    dev = stage_folds("dev", data, 2, 2, 0, donors)
    assert (dev[:, final] == UNUSED).all() and (dev[:, ~final] >= 0).all()
    scored = stage_folds("final", data, 2, 3, 0, donors)
    assert scored.shape == (3, len(final))
    assert (scored[:, final] == 0).all() and (scored[:, ~final] == TRAIN_ONLY).all()

    cfg = TrainConfig(channels=4, depth=2, max_epochs=1, val_fraction=0.0, members=2, distil=True, threads=1)
    method, cache = Method("m", "broad2", "cnn", cfg), tmp_path / "teachers"
    probs, _ = run_method(method, data, scored[:1], 0, {}, None, lambda: None, cache)
    assert np.isfinite(probs[0, final]).all() and np.isnan(probs[0, ~final]).all()
    assert teacher_path(cache, method, 0, 1, cells_digest(data.specimen_ids[~final])).is_file()
    probs, _ = run_method(method, data, dev[:1], 0, {}, None, lambda: None, cache)
    assert np.isnan(probs[0, final]).all() and np.isfinite(probs[0, ~final]).all()


def test_the_report_shows_calibration_and_errors_by_line(tmp_path):
    """score_method on made-up out-of-fold probabilities: an over-confident model (every decision at
    0.99, a quarter wrong) has the ECE that definition gives, a cross-fitted temperature brings it
    down, the wrong cells are listed under their own line and rate, and the report shows them all."""
    from helpers import write_spike_folder
    from trainer.calibration import expected_calibration_error
    from trainer.evaluate import Method, make_folds, score_method
    from trainer.report import write_report

    data = load_spike_set(write_spike_folder(tmp_path / "spikes", n_per_model=16), WindowSpec())
    y = data.labels(get_task("broad2"))
    rng = np.random.default_rng(0)
    wrong = (data.line_names == "Sst-IRES-Cre") & (rng.random(len(y)) < 0.75)  # ~12 of the 16 Sst cells
    decided = np.where(wrong, 1 - y, y)
    probs = np.where(np.arange(2)[None] == decided[:, None], 0.99, 0.01)[None]
    folds = make_folds(data, 2, 1, 0)
    method = Method("cnn_broad2", "broad2", "cnn")
    s = score_method(method, data, probs, 10, folds)
    c = s["calibration"]
    assert np.isclose(c["ece"], expected_calibration_error(probs[0], y))
    assert np.isclose(c["ece"], wrong.mean() - 0.01 + 0.0, atol=1e-6)  # confidence 0.99, accuracy 1 - wrong
    assert c["ece_calibrated"] < c["ece"] / 2 and all(t > 1 for t in c["temperatures"])
    assert sum(c["reliability"]["count"]) == len(y)
    top = s["errors_by_line"][0]
    assert (top["line"], top["class"], top["fs_khz"], top["errors"]) == ("Sst-IRES-Cre", "Inh", 50, wrong.sum())
    assert top["called"] == {"Exc": wrong.sum()} and all(r["errors"] == 0 for r in s["errors_by_line"][1:])
    assert [r["precision"] for r in c["evidence"] if r["threshold"] == 0.95] == [pytest.approx(1 - wrong.mean())]
    exc_right = (y[decided == 0] == 0).mean()  # the Sst cells called Exc make Exc the least precise class
    assert c["evidence"][-1]["worst_class"] == 0 and np.isclose(c["evidence"][-1]["worst_precision"], exc_right)
    fixed = score_method(method, data, probs, 10, None, temperature=2.0)["calibration"]
    assert fixed["temperatures"] == [2.0] and fixed["ece_calibrated"] < fixed["ece"]

    s["config"] = {}
    results = {"methods": {"cnn_broad2": s}, "skipped": {},
               "meta": {"command": "test", "created": "now", "elapsed_min": 0.0, "machine": "m", "data": "d",
                        "n_cells": len(y), "n_skipped": 0, "window": data.spec.to_dict(), "folds": 2, "repeats": 1,
                        "seed": 0, "group_by": "cell", "stage": "dev"}}
    md = write_report(results, tmp_path / "report").read_text()
    assert "## Calibration" in md and f"| cnn_broad2 | {len(y)} | {c['ece']:.3f} | {c['ece_calibrated']:.3f}" in md
    assert f"| Sst-IRES-Cre | Inh | 50 kHz | 16 | {wrong.sum():g} (" in md
    assert "development cells" in md and (tmp_path / "report" / "reliability.png").stat().st_size > 0


def test_evaluate_stages_from_the_command_line(tmp_path):
    """`evaluate --stage dev` tests only the development cells, `--stage final` only the final split
    (each repeat a seed), and a report of one stage is never updated with another's folds."""
    from helpers import write_spike_folder
    from trainer.__main__ import main as trainer_main
    from trainer.evaluate import final_split

    spikes = write_spike_folder(tmp_path / "spikes", n_per_model=15)
    final = final_split(load_spike_set(spikes, WindowSpec()), None)
    args = ["evaluate", "--data", str(spikes), "--group-by", "cell", "--methods", "gbm_ap_broad2", "--folds", "3",
            "--bootstrap", "10", "--readme", ""]
    for stage, tested in (("dev", (~final).sum()), ("final", final.sum())):
        run = CliRunner().invoke(trainer_main, args + ["--stage", stage, "--out", str(tmp_path / stage)])
        assert run.exit_code == 0, run.output
        report = json.loads((tmp_path / stage / "report.json").read_text())
        assert report["meta"]["stage"] == stage and report["meta"]["tested_cells"] == tested
        assert report["methods"]["gbm_ap_broad2"]["pooled"]["n"] == tested
    assert "final scoring" in (tmp_path / "final" / "report.md").read_text()
    assert "development cells" in (tmp_path / "dev" / "report.md").read_text()
    run = CliRunner().invoke(trainer_main, args + ["--stage", "final", "--update", "--out", str(tmp_path / "dev")])
    assert run.exit_code != 0 and "--stage" in run.output
    before = json.loads((tmp_path / "dev" / "report.json").read_text())["methods"]["gbm_ap_broad2"]
    run = CliRunner().invoke(trainer_main, ["rescore", "--report-dir", str(tmp_path / "dev"), "--data", str(spikes),
                                            "--bootstrap", "10"])
    after = json.loads((tmp_path / "dev" / "report.json").read_text())["methods"]["gbm_ap_broad2"]
    assert run.exit_code == 0, run.output
    assert after["pooled"] == before["pooled"] and after["calibration"] == before["calibration"]  # same folds again
    for choice in (["calibration", "--report"], ["bias-sweep", "--report-dir"]):  # no choice on the final split
        run = CliRunner().invoke(trainer_main, choice + [str(tmp_path / "final"), "--method", "gbm_ap_broad2",
                                                         "--data", str(spikes)])
        assert run.exit_code != 0 and "final stage's report" in run.output, run.output


def test_readme_figures_follow_the_committed_final_report(tmp_path):
    """The README's figures come from docs/report: its stage, its methods only, notes for those shown."""
    from pathlib import Path

    from trainer.report import update_readme

    results = json.loads((Path(__file__).parents[1] / "docs/report/report.json").read_text())
    assert results["meta"]["stage"] == "final" and results["meta"]["repeats"] >= 3
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- figures:start -->\nold\n<!-- figures:end -->\ntail\n")
    update_readme(results, readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("tail\n") and "old" not in text
    assert "**final scoring**" in text and "`cnn_genetic5`" in text and "`cnn_broad2`" in text
    assert ("ablation_v_re_im" in text) == ("ablation_v_re_im" in results["methods"])
    assert "`gbm_allen_*` use Allen's features" in text
