"""Micro-batching: small calls of one tensor function from many threads, run as one call.

A slider move decodes one latent. On a CPU one decoder call on a batch of 16 latents costs far
less than 16 calls on one (the bundled 64 px model: about a third), and 16 threads calling
torch at once only take turns on the same cores. :class:`MicroBatcher` lets every request
thread call ``batcher(z)`` as it would call ``fn(z)``: one worker thread takes the requests
waiting at that moment (after waiting at most ``max_wait_s`` for more), concatenates them along
dim 0, calls ``fn`` once and hands each caller its own rows. A lone request is run as soon as
the worker is free; under load, requests gather while the previous batch runs.

    decode = MicroBatcher(lambda z: editing.decode(model, z), max_batch=16)
    x = decode(z)  # (1, D) -> (1, 3, S, S), from any thread
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import torch


class _Request:
    __slots__ = ("x", "result", "error", "done")

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.result: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class MicroBatcher:
    """Run ``fn`` on the concatenation of concurrent callers' inputs; thread-safe.

    ``fn`` maps a ``(B, ...)`` tensor to a tensor whose first dimension is also ``B``, row k
    of the output depending only on row k of the input (a decoder in eval mode). A batch
    holds whole requests, at most ``max_batch`` rows (a single larger request runs alone).
    If a batched call fails, each of its requests is run alone, so one bad input fails only
    its own caller, with ``fn``'s exception. ``fn`` runs under ``torch.no_grad()``.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, max_batch: int = 16,
                 max_wait_s: float = 0.0, name: str = "micro-batcher"):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0 seconds, got {max_wait_s}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.name = name
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._worker: threading.Thread | None = None  # started by the first call
        self._is_closed = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``fn(x)`` for a ``(n, ...)`` tensor with n >= 1, computed in a batch with others."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{self.name} takes a tensor of shape (n, ...) with n >= 1, got {shape}")
        request = _Request(x)
        with self._cond:
            if self._is_closed:
                raise RuntimeError(f"{self.name} is closed")
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._worker.start()
            self._pending.append(request)
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def close(self) -> None:
        """Finish the requests already waiting, then stop the worker; later calls are refused."""
        with self._cond:
            self._is_closed = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    def __enter__(self) -> "MicroBatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the worker ----------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._is_closed:
                    self._cond.wait()
                if not self._pending:  # closed and drained
                    return
                if self.max_wait_s > 0:
                    deadline = time.monotonic() + self.max_wait_s
                    while self._rows(self._pending) < self.max_batch and not self._is_closed:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                batch = self._take()
            self._run(batch)

    @staticmethod
    def _rows(requests: list[_Request]) -> int:
        return sum(r.x.shape[0] for r in requests)

    def _take(self) -> list[_Request]:
        """The oldest waiting requests that fit in max_batch rows (at least one)."""
        batch, rows = [], 0
        while self._pending and (not batch or rows + self._pending[0].x.shape[0] <= self.max_batch):
            request = self._pending.pop(0)
            batch.append(request)
            rows += request.x.shape[0]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        try:
            try:
                with torch.no_grad():
                    x = batch[0].x if len(batch) == 1 else torch.cat([r.x for r in batch])
                    y = self.fn(x)
                if not isinstance(y, torch.Tensor) or y.dim() < 1 or y.shape[0] != x.shape[0]:
                    shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                    raise ValueError(f"{self.name}: fn returned {shape} for an input of {x.shape[0]} rows; "
                                     "it must return one row per input row")
            except Exception as error:
                if len(batch) == 1:
                    batch[0].error = error
                else:  # find the request at fault: each one alone
                    for request in batch:
                        self._run([request])
                return
            start = 0
            for request in batch:
                stop = start + request.x.shape[0]
                request.result = y[start:stop]
                start = stop
        finally:
            for request in batch:
                if request.result is None and request.error is None:  # a BaseException went by
                    request.error = RuntimeError(f"{self.name} stopped before answering")
                request.done.set()
