"""The built-in model neurons: the fitted table, one AP each, variety between cells and sweeps,
and the fitting command's pieces."""
import numpy as np
import pytest

from rtclassify.simulator.neurons import NEURONS, PARAMS_TABLE, builtin_cells, model_ap, read_params


@pytest.fixture(scope="module")
def genetic5():
    from rtclassify.model.file_format import load_model

    return load_model("genetic5")


def test_the_package_holds_a_fitted_neuron_for_every_genetic_class():
    assert PARAMS_TABLE.exists()
    table = read_params()
    assert sorted(table) == sorted(NEURONS)
    assert sorted(cls for cls, _ in table.values()) == ["Exc", "Ndnf", "Pvalb", "Sst", "Vip"]


@pytest.mark.parametrize("fs", [50_000.0, 200_000.0])
def test_each_neuron_gives_one_ap_cut_like_the_allen_traces(fs):
    for name in NEURONS:
        ap, delay, step = model_ap(name, fs)
        assert len(ap) == int(3e-3 * fs) and int(np.argmax(ap)) == int(1e-3 * fs), name
        assert 10 < ap.max() < 60 and ap[0] < -35, name  # overshoot, and a membrane near threshold before
        assert 0.0013 <= delay <= 0.010 and step > 0, name


def test_the_shipped_classifier_recognises_every_sweep_of_every_simulated_cell(genetic5):
    """What the demo shows: each built-in cell (fit and drawn variants) labelled as the class it
    stands for on each of its sweeps, which differ (so a cell's verdict accumulates evidence)."""
    rng = np.random.default_rng(1)
    hits, total = 0, 0
    for cell in builtin_cells(50_000.0, variants=2, seed=3):
        probs = []
        for _ in range(3):
            ap, delay = cell.sweep_ap(rng)
            p = genetic5.run(ap[None].astype(np.float32))[0]
            probs.append(p)
            hits += genetic5.classes[int(np.argmax(p))] == cell.meta["class"]
            total += 1
        assert not np.allclose(probs[0], probs[1]), cell.cell_id  # sweep-to-sweep variety
    assert hits / total >= 0.9, (hits, total)


def test_cells_drawn_around_a_fit_differ():
    a, b = builtin_cells(50_000.0, variants=2)[:len(NEURONS) + 1:len(NEURONS)]
    assert a.meta["model"] == b.meta["model"] and not np.allclose(a.ap_mv, b.ap_mv)


def test_fit_pieces_round_trip_and_score(genetic5, tmp_path):
    from trainer.neuron_fit import NeuronFit, pack, score, unpack, write_table

    _, params = read_params()["FS"]
    assert unpack(pack(params), params) == pytest.approx(params)
    ap, _, _ = model_ap("FS", 50_000.0)
    rms_v, rms_d, p = score(ap, ap, "Pvalb", genetic5)
    assert rms_v == 0 and rms_d == 0 and 0 < p <= 1
    fit = NeuronFit("FS", "Pvalb", params, ap, ap, 40, rms_v, rms_d, p, 1)
    write_table([fit], tmp_path / "t.csv", "test")
    assert read_params(tmp_path / "t.csv")["FS"] == ("Pvalb", pytest.approx(params))
