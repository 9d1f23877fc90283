"""File formats: recordings on disk read into sweeps (mV, pA, Hz).

- `nwb`: NWB 1 (Allen, MIES) and NWB 2 sweeps
- `npz`: .npz arrays `v` and `i`
- `spike_folder`: a folder of single action potentials, one per cell (`cells.csv` + `traces/`)
- `stimuli`: which sweeps are short squares, and where their step is
"""
