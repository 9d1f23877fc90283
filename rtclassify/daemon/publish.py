"""Output: labels and skips to a ZMQ PUB socket, an LSL marker outlet and a JSONL log."""
import json
import os
import socket
import sys
import time

LOG_ONLY_TOPICS = {"gap", "malformed", "ignored", "status"}  # recorded, not sent to the acquisition software


class Publisher:
    """Sends each message once as JSON: ZMQ `[topic, json]`, LSL string sample, JSONL line.

    zmq_endpoint: where to bind the PUB socket (None: no ZMQ output). lsl_name: name of the
    `Markers` outlet (None: no LSL output). log_path: JSONL file appended to (None: no log).
    """

    def __init__(self, zmq_endpoint: str | None = None, lsl_name: str | None = None, log_path: str | None = None,
                 context=None):
        self.sock = None
        self.outlet = None
        self.log = None
        self.sent = {}
        if zmq_endpoint:
            import zmq

            self.sock = (context or zmq.Context.instance()).socket(zmq.PUB)
            self.sock.setsockopt(zmq.SNDHWM, 100_000)  # labels are small; never drop them at the socket
            self.sock.setsockopt(zmq.LINGER, 2000)
            self.sock.bind(zmq_endpoint)
        if lsl_name:
            import pylsl

            # the source id names this daemon, so that LSL's recovery never confuses two daemons
            info = pylsl.StreamInfo(lsl_name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                    f"rtclassify-{lsl_name}-{socket.gethostname()}-{os.getpid()}")
            self.outlet = pylsl.StreamOutlet(info)
        if log_path:
            self.log = open(log_path, "a", buffering=1)

    def emit(self, topic: str, msg: dict) -> None:
        text = json.dumps(msg, separators=(",", ":"))
        if topic not in LOG_ONLY_TOPICS:
            if self.sock is not None:
                self.sock.send_multipart([topic.encode(), text.encode()])
            if self.outlet is not None:
                self.outlet.push_sample([text])
        if self.log is not None:  # the same JSON object with topic and wall-clock time in front
            head = json.dumps({"topic": topic, "t": round(time.time(), 6)}, separators=(",", ":"))
            self.log.write(head[:-1] + ("," + text[1:] if len(text) > 2 else "}") + "\n")
        self.sent[topic] = self.sent.get(topic, 0) + 1

    def close(self) -> None:
        if self.log is not None:
            self.log.flush()
            self.log.close()
            self.log = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.outlet = None


def warn(text: str, verb: str = "serve") -> None:
    """One line on stderr, for the operator."""
    print(f"rtclassify {verb}: {text}", file=sys.stderr, flush=True)
