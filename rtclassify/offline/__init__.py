"""Offline classification: files on disk to labels, through the same detector, windows and model as `serve`.

- `sweep_windows`: every short square that evoked one AP gives one window (shared with the trainer)
- `predict`: a folder of single action potentials classified (`rtclassify predict`)
- `annotate`: per-sweep labels written back into an NWB file (`rtclassify annotate`)
"""
