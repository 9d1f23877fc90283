"""The cell verdict: the cell models (per-cell features -> type; `cell_model`, served by `trees`), and
the rule that joins them with the AP network into one verdict per cell (`combine`)."""
