"""Loading a labelled folder of single APs (the allen-ctdb-spikes layout) into arrays."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtclassify.formats.spike_folder import CellError, load_cell_trace, read_cells_table, stored_window
from rtclassify.dsp.windows import WindowSpec
from trainer.labels import RELATED_FILE, Task, assign_labels, auxiliary_labels, read_mapping


@dataclass
class SpikeSet:
    """All usable cells of a folder: windows (N, L) in mV at spec.fs_hz, and per-cell metadata."""

    specimen_ids: np.ndarray  # (N,) str
    fs_hz: np.ndarray  # (N,) native sampling rate, Hz
    windows: np.ndarray  # (N, L) float32 mV
    line_names: np.ndarray  # (N,) str
    dendrite_types: np.ndarray  # (N,) str
    spec: WindowSpec
    skipped: dict  # specimen_id -> reason
    layers: np.ndarray | None = None  # (N,) str cortical layer ("" unknown or no layer column); None: not read
    traces: list | None = None  # (N,) stored APs, each (n,) mV at its fs_hz (rig draws start from them); None: not kept

    def rig_windows(self, task: Task, draws: int, seed: int, progress=None, cells: np.ndarray | None = None,
                    rates_hz: tuple | None = None, cooled_share: float = 0.5,
                    undeclared_share: float = 0.0) -> np.ndarray:
        """(N, 1 + draws, L) float32 mV: each cell's window as recorded, then through `draws` random
        acquisition chains (trainer.rigs.rig_pool), its AP widened by its class's temperature ratio.
        cells: (N,) bool, the cells to draw for (default all); the others repeat their window as recorded.
        rates_hz: (low, high) to draw every rig's rate log-uniform from (default: draw_rig's distribution);
        cooled_share: the share of rigs drawn below 34 °C; undeclared_share: of those, the share read
        as if the temperature were not declared."""
        from trainer.rigs import family_ratios, rig_pool

        if self.traces is None:
            raise ValueError("rig draws need the stored traces: load the folder with load_spike_set")
        cells = np.ones(len(self.windows), bool) if cells is None else cells
        out = np.repeat(self.windows[:, None, :], 1 + draws, axis=1)
        idx = np.flatnonzero(cells)
        ratios = family_ratios(list(task.classes), self.labels(task)[idx], self.dendrite_types[idx])
        out[idx, 1:] = rig_pool([self.traces[i] for i in idx], self.fs_hz[idx], ratios, self.spec, draws, seed,
                                progress, rates_hz, cooled_share, undeclared_share)
        return out

    def labels(self, task: Task) -> np.ndarray:
        """(N,) class index into task.classes, -1 where the cell is not part of the task."""
        names = assign_labels(self.line_names, self.dendrite_types, task, read_mapping())
        return np.array([task.classes.index(n) if n is not None else -1 for n in names])

    def training_labels(self, task: Task, related_lines: bool) -> np.ndarray:
        """labels(task), plus with related_lines the class of cells from related Cre lines
        (trainer/cre_related.csv) where the cell is not part of the task: extra training cells,
        never scored. Tasks labelled by dendrite type get none."""
        y = self.labels(task)
        if not related_lines or task.source != "cre":
            return y
        names = assign_labels(self.line_names, self.dendrite_types, task, read_mapping(RELATED_FILE))
        related = np.array([task.classes.index(n) if n is not None else -1 for n in names])
        return np.where(y >= 0, y, related)

    def auxiliary_labels(self, target: str, train: np.ndarray | None = None) -> np.ndarray:
        """(N,) class index of each cell's auxiliary label (TrainConfig.aux_target; -1: none), its
        classes drawn from the cells where the (N,) bool mask `train` is set (default: all)."""
        return auxiliary_labels(self.line_names, self.dendrite_types, target,
                                np.ones(len(self.line_names), dtype=bool) if train is None else train,
                                self.layers)


def load_spike_set(folder: Path, spec: WindowSpec) -> SpikeSet:
    """Read every cell of `folder`; cells that cannot be used are listed in `skipped` with the reason."""
    rows = read_cells_table(folder)
    for col in ("line_name", "dendrite_type"):
        if col not in rows[0].columns:
            raise ValueError(f"{folder}/cells.csv: training needs a {col!r} column")
    seen, keep, windows, traces, skipped = set(), [], [], [], {}
    for row in rows:
        if row.specimen_id in seen:
            skipped[row.specimen_id] = "duplicate specimen_id (kept the first row)"
            continue
        seen.add(row.specimen_id)
        try:
            trace = load_cell_trace(folder, row, spec)
            windows.append(stored_window(trace, row.fs_hz, spec))
            traces.append(trace)
            keep.append(row)
        except CellError as exc:
            skipped[row.specimen_id] = str(exc)
    return SpikeSet(
        specimen_ids=np.array([r.specimen_id for r in keep]),
        fs_hz=np.array([r.fs_hz for r in keep]),
        windows=np.stack(windows).astype(np.float32),
        line_names=np.array([r.columns["line_name"] or "" for r in keep]),
        dendrite_types=np.array([r.columns["dendrite_type"] or "" for r in keep]),
        spec=spec,
        skipped=skipped,
        layers=np.array([r.columns.get("layer") or "" for r in keep]),
        traces=traces,
    )


def read_donors(metadata_dir: Path, specimen_ids: np.ndarray) -> np.ndarray:
    """(N,) donor__id (str) of each cell, from cell_types_specimen_details.csv in the Allen metadata
    folder. Raises ValueError naming the file and the cells it has no donor for."""
    import pandas as pd

    path = Path(metadata_dir) / "cell_types_specimen_details.csv"
    if not path.is_file():
        raise ValueError(f"{path} not found: folds grouped by donor need the allen-ctdb-metadata folder "
                         "(--metadata), or choose --group-by cell")
    table = pd.read_csv(path, usecols=["specimen__id", "donor__id"], dtype=str).drop_duplicates("specimen__id")
    donors = table.set_index("specimen__id")["donor__id"].reindex(np.asarray(specimen_ids).astype(str))
    missing = donors.index[donors.isna()]
    if len(missing):
        raise ValueError(f"{path}: no donor__id for {len(missing)} cells (e.g. {list(missing[:3])}); "
                         "add them or choose --group-by cell")
    return donors.to_numpy(dtype=str)
