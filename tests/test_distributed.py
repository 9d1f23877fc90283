"""Training under torchrun with 2 CPU processes (gloo) writes the same card fields as one process."""
import subprocess
import sys

import pytest

from helpers import write_spike_folder
from rtclassify.model.file_format import load_model
from trainer.fit import batch_indices

pytestmark = pytest.mark.slow


def test_each_rank_takes_its_own_slice_of_every_global_batch():
    import torch

    order = torch.arange(10)
    assert [b.tolist() for b in batch_indices(order, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    r0, r1 = batch_indices(order, 2, 0, 2), batch_indices(order, 2, 1, 2)
    assert [b.tolist() for b in r0] == [[0, 1], [4, 5]] and [b.tolist() for b in r1] == [[2, 3], [6, 7]]


def test_torchrun_two_processes_matches_one_process_card(tmp_path):
    data = write_spike_folder(tmp_path / "spikes")
    args = ["train", "--task", "broad2", "--data", str(data), "--epochs", "3", "--channels", "4"]
    one = subprocess.run([sys.executable, "-m", "trainer", *args, "--out", str(tmp_path / "one.pt")],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "trainer", *args, "--out", str(tmp_path / "two.pt")],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_model(str(tmp_path / "one.pt")), load_model(str(tmp_path / "two.pt"))
    assert set(a.card) == set(b.card)
    assert (a.card["training_processes"], b.card["training_processes"]) == (1, 2)
    for key in ("task", "classes", "window", "normalisation", "training_data", "architecture"):
        assert a.card[key] == b.card[key], key
