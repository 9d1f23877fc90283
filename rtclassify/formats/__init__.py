"""File formats: recordings on disk read into sweeps (mV, pA, Hz).

- `recordings`: the one entry point, `read_recording(path)`, for every format below
- `nwb`: NWB 1 (Allen, MIES) and NWB 2 sweeps
- `abf`: Axon ABF 1 and 2 (pCLAMP), through pyabf
- `neo_files`: the other formats neo reads (Axograph, WinWCP, Igor, Spike2, ...)
- `npz`: .npz arrays `v` and `i`
- `spike_folder`: a folder of single action potentials, one per cell (`cells.csv` + `traces/`)
- `stimuli`: which sweeps are short squares, and where their step is
"""


class RecordingError(ValueError):
    """A recording that cannot be read; the text names the file, the sweep or channel, and why."""
