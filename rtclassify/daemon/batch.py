"""The inference batch: windows ready for the model, run together, and the model kept warm.

Windows of several headstages completed by the same burst of messages share one call; a window
waits for nothing else. Between stimuli the model is primed on a dummy window while a detected
AP's window still waits for its last samples, so that the call that matters finds it warm.
"""
import time
from dataclasses import dataclass

import numpy as np

PRIME_IDLE_S = 0.0005  # a model idle this long is primed while a window's last samples are due


@dataclass
class ReadyWindow:
    headstage: int
    stim: object  # its tracking.Stimulus
    window: np.ndarray  # (L,) mV at the model rate
    window_end: int  # last input sample the decision needed (stream sample)
    t_ready: float  # clock() when the last needed sample was in the buffer
    lat: dict  # latency breakdown so far, ms


class InferenceBatch:
    """Ready windows and the one call that classifies them: (N, L) mV -> (N, K) probabilities."""

    def __init__(self, model, clock=time.perf_counter):
        self.model = model
        self.clock = clock
        self.ready: list[ReadyWindow] = []
        self.primes = 0
        self.last_inference = -1.0  # clock() of the model's last run
        self.dummy = np.full((1, model.spec.n_samples), -60.0, np.float32)
        self.run = model.run  # (N, L) float32 mV -> (N, K) float64, ONNX Runtime or TorchScript

    def add(self, r: ReadyWindow) -> None:
        self.ready.append(r)

    def take(self, headstage: int | None = None) -> list[ReadyWindow]:
        """Remove and return the ready windows (of one headstage, or all)."""
        if headstage is None:
            out, self.ready = self.ready, []
            return out
        out = [r for r in self.ready if r.headstage == headstage]
        self.ready = [r for r in self.ready if r.headstage != headstage]
        return out

    def prime(self) -> None:
        """Run the model on a dummy window while a detected AP's window still waits for its last
        samples (the ~2 ms after the peak): at most once per PRIME_IDLE_S, i.e. a few times per AP.

        Why: between stimuli the daemon's other work and other processes evict the runtime's code
        and the weights from the CPU caches; a cold call costs several times a warm one here
        (`rtclassify bench`, rows "after 5 ms idle"). The primed calls pay that before the label is due.
        Skipped when the model ran recently or windows are already waiting for it.
        """
        if self.ready or self.clock() - self.last_inference < PRIME_IDLE_S:
            return
        self.run(self.dummy)
        self.last_inference = self.clock()
        self.primes += 1

    def classify(self, batch: list[ReadyWindow], undeclared) -> tuple[np.ndarray, float]:
        """((N, K) float64 probabilities, ms the call took) for `batch`, in its order; undeclared (N,)
        bool: the window's rig declares no temperature (read twice, rtclassify.model.trust)."""
        t0 = self.clock()
        windows = batch[0].window[None] if len(batch) == 1 else np.stack([r.window for r in batch])
        probs = self.model.trust.read(self.run, windows, undeclared, self.model.spec.n_before)
        self.last_inference = self.clock()
        return probs, (self.last_inference - t0) * 1e3
