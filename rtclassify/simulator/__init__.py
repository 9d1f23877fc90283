"""The simulator: a simulated amplifier playing built-in neurons, so nothing needs user data.

- `amplifier`: continuous current-clamp streams with short-square stimuli (`prepare_streams`)
- `neurons`: built-in conductance-based cortical neurons (parameters in `neuron_params.csv`)
- `sinks`: the simulator's outputs: a ZMQ PUB socket or LSL outlets in the contract's format
"""
