"""Signal processing: stimulus and action-potential detection, and the model's window.

- `detector`: the one detector used by `detect`, `sweeps` and `serve` (with numpy references)
- `windows`: window geometry, resampling and cutting (`WindowSpec`, `WindowCutter`)
- `_kernels`: the numba kernels behind both (cached, warmed up at start-up)
"""
