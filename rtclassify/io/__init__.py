"""Transports and files: the input wire format (wire.py), ZeroMQ in (zmq_in.py), Lab Streaming
Layer in (lsl_in.py), file replay (replay.py), the simulator's outputs (sinks.py), NWB and .npz
readers (nwb/, npz.py) and the NWB label writer (annotate.py)."""
