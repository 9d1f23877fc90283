"""Features of long current steps: per step (`step`), per cell from a step family (`family`, Allen's
per-cell definitions), and from recorded sweeps (`sweeps`)."""
