"""CCVAE face editor: one slider per label latent, resample buttons, photo upload.

    python app.py                                 # the bundled model, offline
    python app.py --checkpoint user/ccvae-faces   # a model on the Hub (or a local folder)

In CCVAE each label y_i owns one latent z_i (the characteristic latents z_c); the rest,
z_s, hold the style. A slider sets z_i and the face is decoded again; a resample button
draws a new z_i from the conditional prior p(z_i | y_i), so "resample Eyeglasses" gives a
different pair of glasses each click. Everything a user changes lives in their own
``gr.State``; the model is shared and read-only.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import NamedTuple, Sequence

import gradio as gr
import torch
from PIL import Image

from ccvae import CCVAE, default_device, editing, images
from ccvae.batching import MicroBatcher

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "synthetic-faces"
MAX_FILE_SIZE = "10mb"
NUM_EXAMPLES = 12
SLIDER_STEPS = 100  # at least this many slider steps across the traversal range
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"]
# Faces decoded for concurrent requests (slider moves of many sessions) share one decoder call:
# the ones that arrive while a batch runs, or within BATCH_WAIT_S of the first, up to MAX_BATCH.
MAX_BATCH = 16
BATCH_WAIT_S = 0.002
PNG_COMPRESS_LEVEL = 1  # zlib's fastest: see png_data_url

HOW_IT_WORKS = """\
**How it works.** The encoder turns a face into latents. Each label (Eyeglasses, Smiling, …)
owns one latent; the rest describe *style* (pose, lighting, identity). A **slider** moves only
that label's latent, between the values typical of faces *without* it (the "absent" end) and
*with* it (the "present" end), and the decoder redraws the face; the number beside it is the
classifier's probability that the characteristic is present. **Resample** draws a new value for
that one latent from what the model learned about faces on the slider's current side (a new
pair of glasses, a different smile); **Add** and **Remove** draw from the "present" or "absent"
side. Labels the training data never shows together (the hair colours) stay exclusive: moving
one to "present" moves the others that are present to "absent", since two at once describe a
face the model never saw. **Resample style** keeps every characteristic and draws new style
latents. Random draws use the seed shown in the status line, so any result can be reproduced.
"""

CSS = """
.prob { font-variant-numeric: tabular-nums; padding-top: 1.6em; }
.prob .bar { height: 6px; background: var(--neutral-200); border-radius: 3px; }
.prob .bar span { display: block; height: 6px; background: var(--color-accent); border-radius: 3px; }
#notice { border: 1px solid var(--color-accent); padding: 0.5em 1em; border-radius: 6px; }
/* The edited face stays in view while the sliders are scrolled to. Gradio's container clips
   with overflow: hidden, which would make it the sticky elements' scroll box; clip cuts the same
   and makes none (a top-level rule: Gradio scopes the rules inside @media to its contents).
   Side by side, the face's whole column is sticky: */
.gradio-container { overflow: clip !important; }
@media (min-width: 1024px) {
  #face-column { position: sticky; top: 8px; align-self: flex-start; }
}
/* stacked (a phone): the face alone, smaller, stays at the top of the screen over the sliders;
   its column's other parts (status, buttons) scroll with the page */
@media (max-width: 1023px) {
  #face-column { display: contents; }
  #face-column > * { flex: 1 1 100%; }
  #edited { position: sticky; top: 0; z-index: 100; align-self: flex-start; background: var(--body-background-fill);
            /* the page's background across the whole width, so nothing shows beside it */
            box-shadow: 0 0 0 100vmax var(--body-background-fill); clip-path: inset(0 -100vmax); }
  #edited img { height: min(320px, 28vh) !important; }
  .prob { font-size: var(--text-xs); }
  .label-buttons { flex-wrap: nowrap !important; }  /* a label's three buttons on one line */
  .label-buttons > button { min-width: 0 !important; flex: 1 1 0 !important; overflow-wrap: anywhere; }
}
"""

# Every image the app makes is a gr.HTML whose value is a PNG data URL at the model's
# resolution: an update is one response, with no file to write, fetch, or share between
# sessions (Gradio 6.31 rewrites a shared cache file in place, so two sessions showing the
# same image at once could get a truncated one). The browser enlarges it smoothly; the
# styles travel with the component.
PICTURE_HTML = '{{#if value}}<img src="${value}" alt="${alt}">{{/if}}'
DOWNLOADABLE_HTML = (
    '{{#if value}}<img src="${value}" alt="${alt}">'
    '<a href="${value}" download="${filename}">Download PNG</a>{{/if}}'
)
PICTURE_CSS = """
img { display: block; width: 100%; height: ${img_height}; object-fit: contain; image-rendering: auto; }
a { display: block; text-align: right; font-size: var(--text-sm); }
"""


class Session(NamedTuple):
    """One browser's edit. Latents are (1, D) tensors on the model's device.

    A NamedTuple rather than a dataclass: each time a handler returns a new session, Gradio
    6.31 re-serialises the gr.State's initial value, and for a dataclass that is
    ``dataclasses.asdict``, a deep copy of every tensor in it, on every slider move.
    """

    z_source: torch.Tensor  # encoding of the face being edited; Reset returns here
    z: torch.Tensor  # the edited latent the page shows
    z_donor: torch.Tensor | None = None  # second face for swapping a characteristic in


def slider_range(low: float, high: float) -> tuple[float, float, float]:
    """(minimum, maximum, step) with about SLIDER_STEPS steps and decimal-exact ends.

    The browser reports the range input's value as a short decimal; ends such as
    2.5001500248908997 come back as 2.5001500248909 and fail Gradio's bounds check.
    """
    step = 10.0 ** math.floor(math.log10(max(high - low, 1e-6) / SLIDER_STEPS))
    digits = max(0, -math.floor(math.log10(step)))
    return (round(math.floor(low / step) * step, digits), round(math.ceil(high / step) * step, digits),
            round(step, digits))


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


def png_data_url(image: Image.Image) -> str:
    """``data:image/png;base64,...`` at zlib level PNG_COMPRESS_LEVEL: lossless like Pillow's
    default level 6, several times faster to compress, for a few hundred more bytes a face."""
    with io.BytesIO() as buffer:
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pick_seed(seed: int | None) -> int:
    return secrets.randbelow(2**31) if seed is None else int(seed)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "label"


class Editor:
    """The model adapter behind the page: one method per widget action.

    Arguments follow the widgets' order; each method returns the new values of its outputs
    (images as PNG data URLs) and a new :class:`Session` (the old one is never mutated).
    Methods that draw at random take ``seed`` (None: a fresh one, reported in the status line).
    Single faces are decoded through a :class:`MicroBatcher`, so the handler threads of many
    sessions share decoder calls instead of taking turns on the cores.
    """

    def __init__(self, model: CCVAE, *, examples: Sequence[Image.Image] = (), max_batch: int = MAX_BATCH,
                 batch_wait_s: float = BATCH_WAIT_S):
        self.model = model
        self.decoder = MicroBatcher(lambda z: editing.decode(model, z), max_batch=max_batch,
                                    max_wait_s=batch_wait_s, name="face decoder")
        self.labels: list[str] = list(model.label_names)
        # the labels kept exclusive with each one (model.exclusive): an edit of label i may clear them
        self.partners: list[list[int]] = [torch.nonzero(row).flatten().tolist() for row in model.exclusive]
        self.size: int = model.image_size
        self.ranges: list[tuple[float, float, float]] = []  # slider (minimum, maximum, step)
        self.is_flipped: list[bool] = []  # True when "present" is the slider's left end
        with torch.no_grad():
            for i in range(len(self.labels)):
                absent, present = (float(v) for v in editing.traversal_range(model, i))
                self.ranges.append(slider_range(min(absent, present), max(absent, present)))
                self.is_flipped.append(present < absent)
            self.examples: list[Image.Image] = list(examples) or self._random_faces(NUM_EXAMPLES)

    # ---- helpers -------------------------------------------------------------------------

    def label_index(self, label: str) -> int:
        if label not in self.labels:
            raise gr.Error(f"unknown label {label!r}; choose one of {', '.join(self.labels)}")
        return self.labels.index(label)

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.model.device).manual_seed(seed)

    def _random_faces(self, n: int) -> list[Image.Image]:
        generator = self._generator(0)
        y = editing.sample_labels(self.model, n, generator=generator, compatible=True)
        z = editing.generate(self.model, y, generator=generator)
        return images.to_pil(editing.decode(self.model, z))

    def face(self, z: torch.Tensor) -> str:
        """(1, D) latent -> the face at the model's resolution, as a PNG data URL.

        The decode is batched with other sessions' (:attr:`decoder`). The page enlarges the
        face smoothly in the browser (CSS), which costs nothing per slider move; a 256 px PNG
        would take ~50 ms to compress on the server, a 64 px one about 1 ms.
        """
        return png_data_url(images.to_pil(self.decoder(z)[0]))

    def shown_value(self, i: int, value: float) -> float:
        """``value`` as slider i shows it: rounded to its step, clamped to its range."""
        low, high, step = self.ranges[i]
        return min(max(round(value, max(0, -math.floor(math.log10(step)))), low), high)

    def slider_value(self, z: torch.Tensor, i: int) -> float:
        return self.shown_value(i, float(z[0, i]))

    def prob_html(self, p: float) -> str:
        return (
            f'<div class="bar"><span style="width:{100 * p:.0f}%"></span></div>'
            f"q(present) = <b>{p:.2f}</b>"
        )

    def probs(self, z: torch.Tensor) -> list[float]:
        return [float(p) for p in editing.label_probs(self.model, z)[0]]

    def partner_outputs(self, i: int, z: torch.Tensor) -> list:
        """The sliders, then the probabilities, of the labels kept exclusive with label i: the
        outputs an edit of label i adds, since `editing.intervene` may have cleared them."""
        probs = self.probs(z)
        return [*(self.slider_value(z, j) for j in self.partners[i]),
                *(self.prob_html(probs[j]) for j in self.partners[i])]

    def view(self, session: Session, status: str) -> tuple:
        """Outputs shared by every whole-face action: edited, sliders, probs, session, status."""
        sliders = [self.slider_value(session.z, i) for i in range(len(self.labels))]
        probs = [self.prob_html(p) for p in self.probs(session.z)]
        return (self.face(session.z), *sliders, *probs, session, status)

    def start_from(self, z_source: torch.Tensor, status: str) -> tuple:
        """A new face: input, reconstruction, then :meth:`view`'s outputs."""
        session = Session(z_source=z_source, z=z_source)
        reconstruction = self.face(z_source)
        return (reconstruction, *self.view(session, status))

    def encode_image(self, image: Image.Image) -> torch.Tensor:
        x = images.to_tensor(image).to(self.model.device)
        return editing.encode(self.model, x)

    # ---- choosing a face -----------------------------------------------------------------

    @torch.no_grad()
    def initial(self) -> tuple:
        """The page's first face: the first example."""
        return self.example(0)

    @torch.no_grad()
    def example(self, index: int) -> tuple:
        if not 0 <= index < len(self.examples):
            raise gr.Error(f"example {index} does not exist; there are {len(self.examples)}")
        image = self.examples[index]
        z = self.encode_image(image)
        return (png_data_url(image), *self.start_from(z, f"Example {index + 1}."))

    @torch.no_grad()
    def random_face(self, *, seed: int | None = None) -> tuple:
        """y ~ p(y), never two labels the model keeps exclusive (``editing.sample_labels``), then
        z ~ p(z | y): a face nobody uploaded."""
        seed = pick_seed(seed)
        generator = self._generator(seed)
        y = editing.sample_labels(self.model, 1, generator=generator, compatible=True)
        z = editing.generate(self.model, y, generator=generator)
        present = [name for name, v in zip(self.labels, y[0].tolist()) if v > 0.5]
        status = f"Random face (seed {seed}) drawn with: {', '.join(present) or 'no labels'}."
        return (self.face(z), *self.start_from(z, status))

    def read_upload(self, path: str | None) -> tuple[Image.Image, torch.Tensor]:
        """The uploaded photo, centre-cropped to the model's size, and its encoding; a clear
        gr.Error for a missing or unreadable file."""
        if not path:
            raise gr.Error("No file was received; choose a PNG, JPEG or WebP photo.")
        try:
            image = images.load_image(path, size=self.size)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        return image, self.encode_image(image)

    @torch.no_grad()
    def upload(self, path: str | None) -> tuple:
        image, z = self.read_upload(path)
        return (png_data_url(image), *self.start_from(z, "Your photo, centre-cropped."))

    # ---- one label -----------------------------------------------------------------------

    @torch.no_grad()
    def slide(self, i: int, value: float, session: Session) -> tuple:
        """Slider i moved to ``value``: decode one face, update q(y_i | z_i). Returns the face,
        that probability, the new session, then :meth:`partner_outputs` (where label i now reads
        present, `editing.intervene` has moved the exclusive labels that were present to absent;
        nothing else changes)."""
        z = editing.intervene(self.model, session.z, i, float(value))
        p = float(editing.label_probs(self.model, z)[0, i])
        return (self.face(z), self.prob_html(p), session._replace(z=z), *self.partner_outputs(i, z))

    @torch.no_grad()
    def resample(
        self, i: int, session: Session, *, present: bool | None = None, seed: int | None = None
    ) -> tuple:
        """New z_i ~ p(z_i | y_i = present); present=None keeps the side the face is on. Returns
        the face, slider i, its probability, the session, the status, then :meth:`partner_outputs`
        (adding a hair colour clears the one the face had, as a slider move does)."""
        if present is None:
            present = float(editing.label_probs(self.model, session.z)[0, i]) >= 0.5
        seed = pick_seed(seed)
        # A draw from p(z_i | y_i = present) truncated to the slider's range and unlike the
        # slider's current value: a draw beyond the range would be shown at its end, the same
        # face as before whenever the slider already sits there. Failing that (a range far from
        # the prior), the first draw, shown at the end of the range.
        low, high, _ = self.ranges[i]
        current = self.slider_value(session.z, i)
        draws = editing.sample_characteristic(
            self.model, i, present, 64, generator=self._generator(seed)
        ).tolist()
        value = next(
            (d for d in draws if low <= d <= high and self.shown_value(i, d) != current), draws[0]
        )
        z = editing.intervene(self.model, session.z, i, self.shown_value(i, value))
        p = float(editing.label_probs(self.model, z)[0, i])
        side = "present" if present else "absent"
        status = f"{self.labels[i]}: new sample with it {side} (seed {seed})."
        return (self.face(z), self.slider_value(z, i), self.prob_html(p), session._replace(z=z), status,
                *self.partner_outputs(i, z))

    # ---- the whole face ------------------------------------------------------------------

    @torch.no_grad()
    def resample_style(self, session: Session, *, seed: int | None = None) -> tuple:
        seed = pick_seed(seed)
        z = editing.resample_style(self.model, session.z, generator=self._generator(seed))
        return self.view(session._replace(z=z), f"New style, characteristics kept (seed {seed}).")

    @torch.no_grad()
    def reset(self, session: Session) -> tuple:
        return self.view(session._replace(z=session.z_source), "Back to the encoding of the input.")

    @torch.no_grad()
    def traversal(self, label: str, session: Session) -> str:
        """8 steps of one label from absent to present, everything else fixed but the labels
        exclusive with it, cleared where it reads present as its slider clears them (without
        that, a black-haired face's Blond_Hair strip would keep black hair at every step)."""
        i = self.label_index(label)
        zs = editing.traverse(self.model, session.z, i, steps=8)[0]  # (8, D)
        zs = editing.clear_exclusive(self.model, zs, [i])
        return png_data_url(images.grid(images.to_pil(editing.decode(self.model, zs)), columns=8))

    @torch.no_grad()
    def diversity(self, label: str, session: Session, *, seed: int | None = None) -> tuple[str, str]:
        """16 draws of one characteristic on its current side, everything else fixed."""
        i = self.label_index(label)
        present = float(editing.label_probs(self.model, session.z)[0, i]) >= 0.5
        seed = pick_seed(seed)
        zs = editing.clear_exclusive(self.model, editing.resample_latent(
            self.model, session.z.repeat(16, 1), i, present=present, generator=self._generator(seed)
        ), [i])
        sheet = images.grid(images.to_pil(editing.decode(self.model, zs)), columns=4)
        side = "present" if present else "absent"
        return png_data_url(sheet), f"16 samples of {label} ({side}), seed {seed}."

    @torch.no_grad()
    def grid2d(self, row_label: str, column_label: str, session: Session) -> str:
        """5x5 faces: rows walk ``row_label`` absent -> present, columns ``column_label``, each
        set as its slider sets it (``editing.clear_exclusive``; a grid over two hair colours
        keeps both)."""
        i, j = self.label_index(row_label), self.label_index(column_label)
        if i == j:
            raise gr.Error(f"choose two different labels for the grid (both are {row_label!r})")
        zs = editing.traverse_grid(self.model, session.z, i, j, steps=5)[0]  # (5, 5, D)
        zs = editing.clear_exclusive(self.model, zs, [i, j])
        faces = editing.decode(self.model, zs.reshape(25, -1))
        return png_data_url(images.grid(images.to_pil(faces), columns=5))

    @torch.no_grad()
    def donor_random(self, session: Session, *, seed: int | None = None) -> tuple[str, Session, str]:
        seed = pick_seed(seed)
        generator = self._generator(seed)
        y = editing.sample_labels(self.model, 1, generator=generator, compatible=True)
        z = editing.generate(self.model, y, generator=generator)
        return self.face(z), session._replace(z_donor=z), f"Random second face (seed {seed})."

    @torch.no_grad()
    def donor_upload(self, path: str | None, session: Session) -> tuple[str, Session, str]:
        image, z = self.read_upload(path)
        return png_data_url(image), session._replace(z_donor=z), "Second face uploaded."

    @torch.no_grad()
    def swap(self, label: str, session: Session) -> tuple:
        i = self.label_index(label)
        if session.z_donor is None:
            raise gr.Error("Choose a second face first (Random second face or upload one).")
        # the donor's value of z_i, as a slider move would set it (a donor's hair colour replaces this face's)
        z = editing.intervene(self.model, session.z, i, session.z_donor[:, i])
        return self.view(session._replace(z=z), f"{label} swapped in from the second face.")


def picture(value: str | None, label: str, *, height: str, filename: str | None = None, **kwargs) -> gr.HTML:
    """An image output: its value is a PNG data URL, shown ``height`` high (a CSS length) and
    as wide as its column; ``filename`` adds a link that downloads the PNG under that name."""
    kwargs.setdefault("js_on_load", None)
    return gr.HTML(
        value, label=label, show_label=True, container=True,
        html_template=DOWNLOADABLE_HTML if filename else PICTURE_HTML, css_template=PICTURE_CSS,
        alt=label, filename=filename, img_height=height, **kwargs,
    )


# Gradio 6.31's loading screen starts its elapsed-time loop (requestAnimationFrame, 60 times a
# second) and is unmounted before it can stop it, so every open page keeps producing frames for
# as long as it is open: about 0.055 of a core per idle page in headless Chromium, 0.9 of a core
# for the 16 pages of `python -m train.bench_app`. The loop's first frame is requested by the
# status tracker before the app has loaded (before Gradio sets __gradio_session_hash__), when
# no component's tracker exists yet and the loading screen shows no timer; refusing those
# requests ends the loop before it starts. Every other frame request passes through untouched.
STOP_LOADER_LOOP_JS = """(() => {
  const request = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = function (callback) {
    if (window.__gradio_session_hash__ === undefined && /statustracker/.test(new Error().stack || "")) return 0;
    return request(callback);
  };
})();"""


# Live slider moves. A Gradio event costs the page tens of CPU ms per update in Gradio 6.31
# (loading-status bookkeeping over every component an event touches, snapshots of their props,
# status-tracker frames), and with many pages open on one machine that page work, not the model,
# sets the latency. So while a slider is dragged the page calls a server function of the edited
# face (``gr.HTML(server_functions=...)``, one plain POST to /component_server) with the
# session's hash, the label and the value; the server updates that session's gr.State, as the
# slider's event would, and answers with the face and q(y_i | z_i) (and the q of the labels kept
# exclusive with label i, which the move may have cleared; their sliders follow at the release
# event), which the page shows through the components' own ``props`` (so Gradio's view of their
# values stays true). At most one move
# per page is in flight and the last position of every slider is always sent. The slider's
# ``release`` event (end of a drag) runs the same edit through Gradio, which is also the API
# (``/slide_<label>``).
LIVE_SLIDER_JS = """
const labels = JSON.parse(props.labels);
const pending = new Map();  // label index -> latest value not yet sent
let busy = false;
async function pump() {
  busy = true;
  while (pending.size) {
    const [index, value] = pending.entries().next().value;
    pending.delete(index);
    try {
      const answer = await server.live_slide([window.__gradio_session_hash__, index, value]);
      if (answer && answer.face) {
        props.value = answer.face;
        const probs = window.__ccvae_probs || {};
        probs[index]?.(answer.prob);
        for (const [other, html] of Object.entries(answer.others || {})) probs[other]?.(html);
      } else {
        console.warn("live slider move refused:", answer && answer.error);
      }
    } catch (error) {
      console.warn("live slider move failed", error);
    }
  }
  busy = false;
}
window.__ccvae_live = (range) => {
  const owner = range.closest('[id^="slider-"]');
  const index = owner ? labels.indexOf(owner.id.slice(7)) : -1;
  if (index < 0) return;
  pending.set(index, Number(range.value));
  if (!busy) pump();
};
if (!window.__ccvae_live_listening) {
  window.__ccvae_live_listening = true;
  document.addEventListener("input", (event) => {
    const range = event.target;
    if (range instanceof HTMLInputElement && range.type === "range") window.__ccvae_live?.(range);
  }, true);
}
"""
# Each probability beside a slider registers a setter the live path calls with its new HTML.
PROB_JS = """(window.__ccvae_probs ??= {})[props.index] = (html) => { props.value = html; };"""


class HeadScript:
    """ASGI middleware: puts ``<script>{script}</script>`` first in the ``<head>`` of the page
    served at ``GET /``, so it runs before Gradio's own modules (``launch(head=...)`` is applied
    by those modules after they have started, too late for STOP_LOADER_LOOP_JS)."""

    def __init__(self, app, script: str):
        self.app = app
        self.tag = f"<script>{script}</script>".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in ("", "/"):
            await self.app(scope, receive, send)
            return
        start, chunks = None, []

        async def send_with_script(message):
            nonlocal start
            if message["type"] == "http.response.start":
                start = message  # held back: the body's length changes
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            if content_type.startswith(b"text/html") and b"<head>" in body:
                body = body.replace(b"<head>", b"<head>" + self.tag, 1)
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_with_script)


def launch_options() -> dict:
    """The keyword arguments of ``demo.launch`` that every launch shares (app, tests, benchmark)."""
    from starlette.middleware import Middleware

    return dict(
        theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                font_mono=["ui-monospace", "monospace"]),
        css=CSS,
        max_file_size=MAX_FILE_SIZE,
        run_history=False,
        app_kwargs={"middleware": [Middleware(HeadScript, script=STOP_LOADER_LOOP_JS)]},
    )


def build_demo(
    model: CCVAE,
    *,
    examples: Sequence[Image.Image] = (),
    notice: str | None = None,
    concurrency: int = 2,
) -> gr.Blocks:
    """The page for ``model`` (already on its device, in eval mode). Launches nothing."""
    editor = Editor(model, examples=examples)
    first = editor.initial()
    first_input, first_reconstruction, first_edited = first[:3]
    num_labels = len(editor.labels)
    first_sliders = first[3 : 3 + num_labels]
    first_probs = first[3 + num_labels : 3 + 2 * num_labels]
    first_session, first_status = first[-2:]

    def live_slide(data, request: gr.Request) -> dict[str, str]:
        """The page's live slider move (LIVE_SLIDER_JS): ``[session hash, label index, value]``
        -> ``{"face": data URL, "prob": html, "others": {index: html}}`` (``others``: the
        probabilities of the labels kept exclusive with this one), the session's gr.State updated as
        :meth:`Editor.slide` updates it for the slider's own event. A value beyond the slider's
        range is shown at its end; a malformed move is answered ``{"error": message}``."""
        try:
            session_hash, i, value = parse_live_move(data, len(editor.labels))
            # the Gradio app serving this request (also when mounted in another FastAPI app)
            server = getattr(request, "app", None) or getattr(demo, "server_app", None)
            if not hasattr(server, "state_holder") or session_hash not in server.state_holder:
                raise gr.Error(f"unknown session {session_hash!r:.100}: reload the page")
        except gr.Error as error:
            return {"error": error.message}
        states = server.state_holder[session_hash]
        low, high, _ = editor.ranges[i]
        face, prob, new_session, *partners = editor.slide(i, min(max(value, low), high), states[session._id])
        states[session._id] = new_session
        # the exclusive labels' probabilities (their sliders follow at the release event)
        others = dict(zip(map(str, editor.partners[i]), partners[len(editor.partners[i]):]))
        return {"face": face, "prob": prob, "others": others}

    with gr.Blocks(title="CCVAE face editor", analytics_enabled=False) as demo:
        gr.Markdown(
            "# CCVAE face editor\nEdit a face one characteristic at a time with "
            "[Characteristic Capturing VAEs](https://arxiv.org/abs/2006.10102)."
        )
        gr.Markdown(notice or "", visible=bool(notice), elem_id="notice")
        session = gr.State(first_session)

        with gr.Row():
            with gr.Column(scale=1, min_width=200):
                gallery = gr.Gallery(
                    list(editor.examples),
                    label="Example faces (click one)",
                    columns=4,
                    height=260,
                    allow_preview=False,
                    show_label=True,
                    elem_id="examples",
                )
                with gr.Row():
                    random_button = gr.Button("Random face", elem_id="random-face")
                    upload_button = gr.UploadButton(
                        "Upload a photo", file_types=UPLOAD_TYPES, elem_id="upload"
                    )
                with gr.Row():
                    input_image = picture(first_input, "Input", height="160px", elem_id="input")
                    reconstruction_image = picture(
                        first_reconstruction, "Reconstruction", height="160px", elem_id="reconstruction"
                    )
            with gr.Column(scale=1, min_width=280, elem_id="face-column"):
                edited_face = picture(
                    first_edited, "Edited", height="320px", filename="edited-face.png", elem_id="edited",
                    js_on_load=LIVE_SLIDER_JS, server_functions=[live_slide],
                    labels=json.dumps([slug(name) for name in editor.labels]),
                )
                status = gr.Markdown(first_status, elem_id="status")
                with gr.Row():
                    style_button = gr.Button("Resample style", elem_id="resample-style")
                    reset_button = gr.Button("Reset", elem_id="reset")
            with gr.Column(scale=2, min_width=360):
                sliders, probs, label_buttons = [], [], []
                for i, name in enumerate(editor.labels):
                    low, high, step = editor.ranges[i]
                    ends = "present ◀──▶ absent" if editor.is_flipped[i] else "absent ◀──▶ present"
                    with gr.Row(equal_height=True):
                        sliders.append(
                            gr.Slider(
                                low, high, first_sliders[i], step=step,
                                label=name, info=ends, scale=4, buttons=[], elem_id=f"slider-{slug(name)}",
                            )
                        )
                        probs.append(
                            gr.HTML(first_probs[i], elem_classes="prob", elem_id=f"prob-{slug(name)}",
                                    min_width=90, scale=1, js_on_load=PROB_JS, index=i)
                        )
                    with gr.Row(elem_classes="label-buttons"):
                        label_buttons.append(
                            (
                                gr.Button(f"Resample {name}", size="sm", elem_id=f"resample-{slug(name)}"),
                                gr.Button(f"Add {name}", size="sm", elem_id=f"add-{slug(name)}"),
                                gr.Button(f"Remove {name}", size="sm", elem_id=f"remove-{slug(name)}"),
                            )
                        )

        with gr.Accordion("More: traversals, grids and swapping", open=False):
            with gr.Row():
                with gr.Column():
                    traversal_label = gr.Dropdown(editor.labels, value=editor.labels[0], label="Label")
                    traversal_button = gr.Button("Traversal strip (8 steps, absent → present)")
                    diversity_button = gr.Button("Diversity grid (16 resamples)")
                with gr.Column(scale=3):
                    strip_image = picture(None, "Traversal", height="auto", filename="traversal.png")
                    diversity_image = picture(None, "Diversity", height="300px", filename="diversity.png")
            with gr.Row():
                with gr.Column():
                    row_label = gr.Dropdown(editor.labels, value=editor.labels[0], label="Rows")
                    column_label = gr.Dropdown(
                        editor.labels, value=editor.labels[min(1, num_labels - 1)], label="Columns"
                    )
                    grid_button = gr.Button("5×5 grid over two labels")
                with gr.Column(scale=3):
                    grid_image = picture(None, "Two-label grid", height="300px", filename="grid.png")
            with gr.Row():
                with gr.Column():
                    swap_label = gr.Dropdown(editor.labels, value=editor.labels[0], label="Characteristic")
                    donor_random_button = gr.Button("Random second face")
                    donor_upload_button = gr.UploadButton("Upload second face", file_types=UPLOAD_TYPES)
                    swap_button = gr.Button("Swap it in from the second face")
                with gr.Column(scale=3):
                    donor_image = picture(None, "Second face", height="200px", filename="second-face.png")
        gr.Markdown(HOW_IT_WORKS)

        view_outputs = [edited_face, *sliders, *probs, session, status]
        face_outputs = [input_image, reconstruction_image, *view_outputs]

        def on_example(evt: gr.SelectData):
            return editor.example(evt.index)

        gallery.select(on_example, None, face_outputs, api_name="example")
        random_button.click(lambda: editor.random_face(), None, face_outputs, api_name="random_face")
        upload_button.upload(editor.upload, upload_button, face_outputs, api_name="upload")
        style_button.click(lambda s: editor.resample_style(s), session, view_outputs, api_name="resample_style")
        reset_button.click(editor.reset, session, view_outputs, api_name="reset")

        for i, name in enumerate(editor.labels):
            def slide(value: float, s: Session, i: int = i):
                return editor.slide(i, value, s)

            def resample(s: Session, i: int = i):
                return editor.resample(i, s)

            def add(s: Session, i: int = i):
                return editor.resample(i, s, present=True)

            def remove(s: Session, i: int = i):
                return editor.resample(i, s, present=False)

            # While dragging, the page shows each move through live_slide (LIVE_SLIDER_JS); the
            # end of a drag (or of typing a value) goes through this event, which is also the API.
            # Off the queue: one HTTP request, answered at once, never waiting behind a grid;
            # always_last keeps at most one in flight per session.
            partners = [sliders[j] for j in editor.partners[i]] + [probs[j] for j in editor.partners[i]]
            sliders[i].release(
                slide, [sliders[i], session], [edited_face, probs[i], session, *partners],
                api_name=f"slide_{slug(name)}", trigger_mode="always_last",
                show_progress="hidden", queue=False,
            )
            outputs = [edited_face, sliders[i], probs[i], session, status, *partners]
            for button, fn, verb in zip(label_buttons[i], (resample, add, remove), ("resample", "add", "remove")):
                button.click(fn, session, outputs, api_name=f"{verb}_{slug(name)}", show_progress="hidden")

        traversal_button.click(editor.traversal, [traversal_label, session], strip_image, api_name="traversal")
        diversity_button.click(
            lambda label, s: editor.diversity(label, s), [traversal_label, session],
            [diversity_image, status], api_name="diversity",
        )
        grid_button.click(editor.grid2d, [row_label, column_label, session], grid_image, api_name="grid")
        donor_random_button.click(
            lambda s: editor.donor_random(s), session, [donor_image, session, status], api_name="donor_random"
        )
        donor_upload_button.upload(
            editor.donor_upload, [donor_upload_button, session], [donor_image, session, status],
            api_name="donor_upload",
        )
        swap_button.click(editor.swap, [swap_label, session], view_outputs, api_name="swap")

    demo.queue(default_concurrency_limit=concurrency, max_size=256)
    return demo


def load_examples(checkpoint: Path) -> list[Image.Image]:
    """Held-out faces shipped beside a checkpoint as ``examples/*.png`` (may be none)."""
    folder = checkpoint / "examples"
    if not folder.is_dir():
        return []
    return [Image.open(path).convert("RGB") for path in sorted(folder.glob("*.png"))[:NUM_EXAMPLES]]


def load_model(checkpoint: str) -> tuple[CCVAE, Path | None, str | None]:
    """(model, local folder or None, notice or None).

    A local folder that fails to load is an error; a Hub id that cannot be loaded falls
    back to the bundled model with a notice for the page.
    """
    if Path(checkpoint).exists() or checkpoint.startswith((".", "/", "~")):
        return CCVAE.from_pretrained(Path(checkpoint).expanduser()), Path(checkpoint).expanduser(), None
    try:
        model = CCVAE.from_pretrained(checkpoint)
    except (OSError, ValueError) as error:
        notice = (
            f"⚠️ Could not load the model {checkpoint!r} from the Hugging Face Hub "
            f"({type(error).__name__}: {html.escape(str(error).splitlines()[0] if str(error) else '')}). "
            "Showing the bundled model instead."
        )
        return CCVAE.from_pretrained(str(BUNDLED_CHECKPOINT)), BUNDLED_CHECKPOINT, notice
    return model, None, None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint",
        default=os.environ.get("CCVAE_CHECKPOINT", str(BUNDLED_CHECKPOINT)),
        help="local folder or Hugging Face Hub id (default: $CCVAE_CHECKPOINT or the bundled model)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=None,
        help="events run at once (default: the number of CPU cores; 4 on a GPU)",
    )
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    device = default_device()
    model, folder, notice = load_model(args.checkpoint)
    model.to(device).eval()
    if device.type == "cpu":
        # One intra-op thread: concurrent slider moves share a batched decode (Editor.decoder),
        # which a second thread barely speeds up (16 faces: 10.5 ms on 1 thread, 8.7 on 2), while
        # the other core serves HTTP and handler threads calling torch at once never oversubscribe.
        torch.set_num_threads(1)
    concurrency = args.concurrency or (os.cpu_count() or 2 if device.type == "cpu" else 4)
    examples = load_examples(folder) if folder is not None else []
    demo = build_demo(model, examples=examples, notice=notice, concurrency=concurrency)
    demo.launch(**launch_options())


if __name__ == "__main__":
    main(parse_args())
