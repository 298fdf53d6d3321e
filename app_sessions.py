"""The app's per-session state: each user's edit, kept under their Gradio session hash, and the
page's live slider moves that address it.

The Gradio events (``gr.Request.session_hash``) and the page's live slider (which sends the same
hash) read and write one :class:`SessionStore`; entries live ``ttl_s`` seconds after their last
use, and a page's goes when it closes (the app's ``demo.unload``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import Callable, NamedTuple

import gradio as gr
import torch

SESSION_TTL_S = 3600.0  # a session's edit is forgotten after this long unused
HISTORY_STEPS = 50  # edits a session can undo


class Session(NamedTuple):
    """One user's edit and its history. Latents are (1, D) tensors on the model's device; never mutated.

    Every edit goes through :meth:`edited`, which keeps the latent it replaces (at most
    ``HISTORY_STEPS``) for :meth:`undo`; :meth:`redo` takes back an undo until the next edit.
    The moves of one slider drag are one step: each carries the slider's index as ``drag`` and
    moves while that drag is open replace the step's latent instead of adding steps."""

    z_source: torch.Tensor  # encoding of the face being edited; Reset returns here
    z: torch.Tensor  # the edited latent the page shows
    z_donor: torch.Tensor | None = None  # second face for swapping a characteristic in
    past: tuple[torch.Tensor, ...] = ()  # earlier latents, oldest first: what undo returns to
    future: tuple[torch.Tensor, ...] = ()  # latents undone, next first: what redo returns to
    drag: int | None = None  # the slider whose drag the last step is, while it is open

    def edited(self, z: torch.Tensor, *, drag: int | None = None) -> "Session":
        """This session showing ``z``, one undo step after the current latent. A move of the slider
        ``drag`` whose drag is open replaces the open step's latent; a ``z`` equal to the current
        one adds no step."""
        if drag is not None and drag == self.drag:
            return self._replace(z=z)
        if torch.equal(z, self.z):
            return self
        return self._replace(z=z, past=(self.past + (self.z,))[-HISTORY_STEPS:], future=(), drag=drag)

    def released(self) -> "Session":
        """The open drag ended: the next move of any slider is a new step."""
        return self._replace(drag=None)

    @property
    def can_undo(self) -> bool:
        return any(not torch.equal(z, self.z) for z in self.past)

    @property
    def can_redo(self) -> bool:
        return bool(self.future)

    def undo(self) -> "Session":
        """Back to the last latent before the current one (steps that show the same face are passed
        over: a late move of a drag already released can repeat its last position); unchanged
        with nothing to undo."""
        past, future = list(self.past), self.future
        while past and torch.equal(past[-1], self.z):
            past.pop()
        if not past:
            return self._replace(drag=None)
        return self._replace(z=past.pop(), past=tuple(past), future=(self.z,) + future, drag=None)

    def redo(self) -> "Session":
        """The latent the last undo left; unchanged after a new edit (which forgets what was undone)."""
        if not self.future:
            return self._replace(drag=None)
        return self._replace(z=self.future[0], past=(self.past + (self.z,))[-HISTORY_STEPS:],
                             future=self.future[1:], drag=None)


class SessionStore:
    """Each user's :class:`Session` under their Gradio session hash (``gr.Request.session_hash``),
    read and written by the Gradio events and by the page's live slider; thread-safe. An entry
    unused for ``ttl_s`` seconds is dropped (by the next call: no thread of its own); a page's is
    also dropped when it closes (``demo.unload``)."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, *, clock: Callable[[], float] = time.monotonic):
        if not ttl_s > 0:
            raise ValueError(f"a session's lifetime must be a positive number of seconds, got {ttl_s!r}")
        self.ttl_s = ttl_s
        self.clock = clock  # seconds, never going back
        self._sessions: OrderedDict[str, tuple[float, Session]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def get(self, key: str) -> Session | None:
        with self._lock:
            self._expire()
            if key not in self._sessions:
                return None
            self._sessions.move_to_end(key)
            session = self._sessions[key][1]
            self._sessions[key] = (self.clock(), session)
            return session

    def put(self, key: str, session: Session) -> None:
        with self._lock:
            self._expire()
            self._sessions[key] = (self.clock(), session)
            self._sessions.move_to_end(key)

    def pop(self, key: str) -> None:
        with self._lock:
            self._sessions.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    def _expire(self) -> None:
        oldest_kept = self.clock() - self.ttl_s
        while self._sessions and next(iter(self._sessions.values()))[0] <= oldest_kept:
            self._sessions.popitem(last=False)


def parse_live_move(data, num_labels: int) -> tuple[str, int, float]:
    """Check a live move ``[session hash, label index, value]`` sent by the page; a clear
    gr.Error names what is wrong."""
    if not isinstance(data, (list, tuple)) or len(data) != 3:
        raise gr.Error(f"a live slider move is [session hash, label index, value], got {data!r:.200}")
    session_hash, i, value = data
    if not isinstance(session_hash, str) or not session_hash:
        raise gr.Error(f"a live slider move needs the session hash, got {session_hash!r:.100}")
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_labels:
        raise gr.Error(f"label index must be an integer in [0, {num_labels}), got {i!r:.100}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise gr.Error(f"slider value must be a finite number, got {value!r:.100}")
    return session_hash, i, float(value)
