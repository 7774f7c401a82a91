"""The detection pool: the threads that decode and align photos, the decode processes they hand the bytes to, and
the budget of pixels they decode at once (``MAX_INFLIGHT_PIXELS``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from service.admission import MemoryBudget
from service.decoding import DecodeWorkers


class DetectionPool(ThreadPoolExecutor):
    """The detection threads, the decode processes they hand bytes to, and the budget of pixels they decode.

    ``pixels`` is ``MAX_INFLIGHT_PIXELS``: a photo's full-size pixel count (from its header) is charged before its
    decode and given back once its faces are found (``service.pipeline``).
    """

    def __init__(self, workers: int, decode_timeout_s: float, max_inflight_pixels: int) -> None:
        super().__init__(workers, thread_name_prefix="detect")
        self.decoders = DecodeWorkers(workers, decode_timeout_s)
        self.pixels = MemoryBudget(max_inflight_pixels, "pixels", "MAX_INFLIGHT_PIXELS")

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        self.decoders.close()
