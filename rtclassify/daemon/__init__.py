"""The streaming daemon: from a transport's calls to published labels.

- `service`: `Daemon`, the loop a transport drives: engine calls, heartbeats, clean shutdown
- `engine`: `Engine`, a chunk's way from the wire to a decision (the map of the pipeline)
- `tracking`: per-headstage state: samples held, step scan, open stimuli, answered onsets, cells
- `ring_buffer`: preallocated ring buffers addressed by absolute sample number, with gap accounting
- `batch`: the inference batch: ready windows run together, the model kept warm
- `messages`: label, skip and heartbeat JSON (../shared/CONTRACT.md "Output")
- `publish`: ZMQ PUB, LSL marker outlet and JSONL log
"""
