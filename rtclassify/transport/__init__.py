"""Transport: the acquisition's wire into the daemon.

- `wire`: the input wire format of ../shared/CONTRACT.md (encoding for senders, validation for the daemon)
- `zmq_source`: ZeroMQ SUB input
- `lsl_source`: Lab Streaming Layer input (one EPhys stream per headstage, optional marker stream)
- `file_replay`: recordings (.npz, NWB) played into the daemon as an acquisition program would
- `lsl_log`: keeping liblsl's own log off the terminal
- `ports`: loopback endpoints for local runs
"""
