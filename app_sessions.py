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


class Session(NamedTuple):
    """One user's edit. Latents are (1, D) tensors on the model's device; never mutated."""

    z_source: torch.Tensor  # encoding of the face being edited; Reset returns here
    z: torch.Tensor  # the edited latent the page shows
    z_donor: torch.Tensor | None = None  # second face for swapping a characteristic in


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
