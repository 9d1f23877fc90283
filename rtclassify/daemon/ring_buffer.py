"""Per-headstage ring buffers addressed by absolute sample number, with gap accounting."""
import numpy as np


class RingBuffer:
    """Preallocated (capacity, 2) float64 buffer of V (mV) and I (pA) samples.

    Samples are addressed by their absolute index since the stream started (`first_sample` of the
    wire format). Writing never moves data (no np.roll): a write index wraps around. Reading a
    range that has been overwritten raises, so that a too-small buffer is reported, not hidden.
    """

    def __init__(self, capacity: int):
        if capacity < 16:
            raise ValueError(f"RingBuffer capacity={capacity}: need at least 16 samples")
        self.capacity = int(capacity)
        self.data = np.zeros((self.capacity, 2), dtype=np.float64)
        self.end = 0  # absolute index one past the newest sample
        self.start = 0  # absolute index of the oldest sample still held (== end after reset)
        self.base = 0  # absolute index stored at row 0 (modulo capacity); moved by rebase

    def grow(self, capacity: int) -> None:
        """Enlarge to `capacity` samples, keeping every sample held (for senders of whole sweeps)."""
        if capacity <= self.capacity:
            return
        held = self.read(self.start, self.end)
        self.capacity = int(capacity)
        self.data = np.zeros((self.capacity, 2), dtype=np.float64)
        end = self.end
        self.reset(self.start)
        self.write(held)
        if self.end != end:  # cannot happen: write() keeps count
            raise RuntimeError("ring buffer lost samples while growing")

    def rebase(self, delta: int) -> None:
        """Renumber every sample held by +delta (the stream's own count turned out to differ)."""
        self.base += delta
        self.start += delta
        self.end += delta

    def reset(self, at_sample: int) -> None:
        """Forget everything; the next write starts at absolute sample `at_sample`."""
        self.start = self.end = int(at_sample)

    def write(self, samples: np.ndarray) -> None:
        """Append (n, 2) samples [V mV, I pA] at self.end."""
        n = len(samples)
        if n > self.capacity:  # keep the newest; the caller accounts for the loss
            samples = samples[-self.capacity:]
            self.reset(self.end + n - self.capacity)
            n = self.capacity
        pos = (self.end - self.base) % self.capacity
        first = min(n, self.capacity - pos)
        self.data[pos:pos + first] = samples[:first]
        if first < n:
            self.data[:n - first] = samples[first:]
        self.end += n
        self.start = max(self.start, self.end - self.capacity)

    def locate(self, a: int, b: int) -> int:
        """Row of self.data holding absolute sample a, after checking that [a, b) is held (the
        range may wrap past the last row); raises IndexError if not."""
        if a < self.start or b > self.end or a > b:
            raise IndexError(
                f"samples [{a}, {b}) not in buffer [{self.start}, {self.end}); "
                "raise --buffer-s if this happens on a live stream"
            )
        return (a - self.base) % self.capacity

    def read(self, a: int, b: int) -> np.ndarray:
        """Copy of absolute samples [a, b) as (b - a, 2); raises if not held."""
        pa = self.locate(a, b)
        pb = (b - self.base) % self.capacity
        if b - a == 0:
            return np.zeros((0, 2))
        if pa < pb or pb == 0:
            return self.data[pa:pb if pb else self.capacity].copy()
        return np.concatenate([self.data[pa:], self.data[:pb]])
