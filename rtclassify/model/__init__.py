"""The model: the network, its exported form, the model file and the runtimes that serve it.

- `network`: the triple-input 1-D CNN (voltage, real FFT, imaginary FFT)
- `inputs`: the model's input transforms from a window (normalised voltage, FFT parts)
- `folding`: the export-time rewrite of a trained network into fewer operations
- `file_format`: saving and loading model files (TorchScript + card); the only module that knows the format
- `runtimes`: the CPU serving paths (ONNX Runtime, compiled kernels) and their verification
- `compiled`: the serving network as one numba-compiled function
- `device`: CUDA when asked for and present, CPU otherwise
- `shipped/`: the built-in models (`genetic5.pt`, `broad2.pt`)
"""
