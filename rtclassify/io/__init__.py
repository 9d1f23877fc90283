"""Transport: the wire format (wire.py), ZeroMQ (zmq_io.py) and Lab Streaming Layer (lsl_io.py)."""
