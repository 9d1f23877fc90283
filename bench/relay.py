"""The floor under the daemon's latency: a trivial relay between the same sender and receiver.

    python -m bench.relay --connect tcp://127.0.0.1:5555 --publish tcp://127.0.0.1:5556

It subscribes to the sender's data exactly as `rtclassify serve --source zmq` does, decodes each
data header and payload as the daemon's wire parser does, and answers every chunk at once with a
label-shaped message whose `window_end_sample` is the chunk's last sample. Timed by the same
client (bench/suite.py:run_e2e) as the daemon, its latency is what this machine's sockets, two
process hops and one Python interpreter cost; the daemon's excess over it is its own work
(detection, windows, the model, the label) and whatever its loop adds.
"""
import argparse
import json
import sys

import numpy as np


def relay(connect: str, publish: str) -> None:
    import zmq

    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(connect)
    pub = ctx.socket(zmq.PUB)
    pub.bind(publish)
    seq = 0
    while True:
        if not sub.poll(1000):  # a heartbeat while idle: the client's "started" signal
            pub.send_multipart([b"heartbeat", b"{}"])
            continue
        frames = sub.recv_multipart()
        if frames[0] != b"data":
            continue
        h = json.loads(frames[1])
        samples = np.frombuffer(frames[2], dtype="<f4").reshape(-1, 2).astype(np.float64)
        end = h["first_sample"] + len(samples) - 1
        msg = {"schema": "rtclassify.label/1", "headstage": h["headstage"], "seq": seq,
               "stim_onset_sample": end, "window_end_sample": end, "latency_ms": {"process": 0.0}}
        pub.send_multipart([b"label", json.dumps(msg, separators=(",", ":")).encode()])
        seq += 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connect", required=True)
    p.add_argument("--publish", required=True)
    a = p.parse_args(argv)
    try:
        relay(a.connect, a.publish)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
