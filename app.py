"""CCVAE face editor: one slider per label latent, resample buttons, photo upload.

    python app.py                                 # the bundled model, offline
    python app.py --checkpoint user/ccvae-faces   # a model on the Hub (or a local folder)

In CCVAE each label y_i owns one latent z_i (the characteristic latents z_c); the rest,
z_s, hold the style. A slider sets z_i and the face is decoded again; a resample button
draws a new z_i from the conditional prior p(z_i | y_i) where the classifier reads y_i, so
"resample Eyeglasses" gives a different pair of glasses each click. Everything a user changes
is their own :class:`Session` (with its undo history), kept in a :class:`SessionStore` under their
Gradio session hash; the model is shared and read-only.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import Callable, Sequence

import gradio as gr
import torch
from PIL import Image

from app_batching import MicroBatcher
from app_sessions import SESSION_TTL_S, Session, SessionStore, parse_live_move
from ccvae import CCVAE, CheckpointError, default_device, editing, images, photos
from ccvae.hub import model_dir

HERE = Path(__file__).resolve().parent
BUNDLED_CHECKPOINT = HERE / "checkpoints" / "synthetic-faces"
MAX_FILE_SIZE = "10mb"
NUM_EXAMPLES = 12
SLIDER_STEPS = 100  # at least this many slider steps across the traversal range
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"]
# Faces decoded for concurrent requests (slider moves of many sessions) share one decoder call:
# the ones that arrive while a batch runs, or within BATCH_WAIT_S of the first, up to MAX_BATCH.
MAX_BATCH = 16
BATCH_WAIT_S = 0.002
# Gradio keeps a record of each session it has seen (a copy of every component's config, a few hundred
# KB here, rebuilt if an evicted session comes back) up to this many; the app keeps no state in them.
GRADIO_SESSIONS_KEPT = 64
WORDS = {"5_o_Clock_Shadow": "5 o'clock shadow"}  # label names that underscores alone don't turn into words

# Every image is a gr.HTML whose value is a PNG data URL at the model's resolution: one response,
# no file to write, fetch, or share between sessions (Gradio rewrites a shared cache file in place,
# so two sessions showing one image at once could get a truncated one). ``notice``: live_slider.js.
PICTURE_HTML = '{{#if value}}<img src="${value}" alt="${alt}">{{/if}}'
DOWNLOADABLE_HTML = (
    '{{#if value}}<img src="${value}" alt="${alt}">'
    '<a href="${value}" download="${filename}">Download PNG</a>{{/if}}'
)
# The edited face also holds the face the edit started from (``start``), shown instead while the
# compare button is held (app_assets/compare.js), and a line for what the live slider reports
# (``notice``: live_slider.js).
EDITED_HTML = (
    '{{#if value}}<div class="face"><img class="now" src="${value}" alt="${alt}">'
    '<img class="start" src="${start}" alt="The face you started from"></div>'
    '<div class="tools"><button type="button" class="compare">Hold to compare</button>'
    '<a href="${value}" download="${filename}">Download PNG</a></div>{{/if}}'
    '{{#if notice}}<p class="notice">{{notice}}</p>{{/if}}'
)


def slider_range(low: float, high: float) -> tuple[float, float, float]:
    """(minimum, maximum, step) with about SLIDER_STEPS steps and decimal-exact ends (the browser
    sends an end such as 2.5001500248908997 back as 2.5001500248909, out of Gradio's bounds)."""
    step = 10.0 ** math.floor(math.log10(max(high - low, 1e-6) / SLIDER_STEPS))
    digits = max(0, -math.floor(math.log10(step)))
    return (round(math.floor(low / step) * step, digits), round(math.ceil(high / step) * step, digits),
            round(step, digits))


def asset(name: str) -> str:
    """The text of ``app_assets/<name>``: the page's JavaScript, CSS and help."""
    return (HERE / "app_assets" / name).read_text()


def pick_seed(seed: int | None) -> int:
    return secrets.randbelow(2**31) if seed is None else int(seed)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "label"


def words(name: str) -> str:
    """A label as the page shows it: ``Mouth_Slightly_Open`` -> ``Mouth slightly open`` (acronyms kept)."""
    if name in WORDS:
        return WORDS[name]
    parts = [p for p in re.split(r"[_\s]+", name) if p]
    return " ".join(p if k == 0 or p.isupper() else p.lower() for k, p in enumerate(parts)) or name


class Editor:
    """The model adapter behind the page: one method per widget action, arguments in the widgets'
    order and the user's :class:`Session` last, returning its outputs' new values (images as PNG
    data URLs), then the new session if the edit changed. ``seed=None`` draws a fresh seed, shown
    in the status. Single faces share decoder calls across sessions (a :class:`MicroBatcher`)."""

    def __init__(self, model: CCVAE, *, examples: Sequence[Image.Image] = (), max_batch: int = MAX_BATCH,
                 batch_wait_s: float = BATCH_WAIT_S):
        self.model = model
        self.decoder = MicroBatcher(lambda z: editing.decode(model, z), max_batch=max_batch,
                                    max_wait_s=batch_wait_s, name="face decoder")
        self.labels: list[str] = list(model.label_names)
        # the labels kept exclusive with each one (model.exclusive): an edit of label i may clear them
        self.partners: list[list[int]] = [torch.nonzero(row).flatten().tolist() for row in model.exclusive]
        with torch.no_grad():
            ends = [tuple(map(float, editing.traversal_range(model, i))) for i in range(len(self.labels))]
            self.examples: list[Image.Image] = list(examples) or images.to_pil(
                editing.decode(model, editing.random_face(model, NUM_EXAMPLES, generator=self._generator(0))[1]))
        self.ranges = [slider_range(min(end), max(end)) for end in ends]  # slider (minimum, maximum, step)
        self.is_flipped = [present < absent for absent, present in ends]  # "present" is the slider's left end

    def label_index(self, label: str) -> int:
        """A label given by name (``Mouth_Slightly_Open``) or as the page shows it (``Mouth slightly open``)."""
        for i, name in enumerate(self.labels):
            if label in (name, words(name)):
                return i
        raise gr.Error(f"unknown label {label!r}; choose one of {', '.join(self.labels)}")

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.model.device).manual_seed(seed)

    def face(self, z: torch.Tensor) -> str:
        """(1, D) latent -> the face (model's resolution, the page enlarges it) as a PNG data URL."""
        return images.to_data_url(images.to_pil(self.decoder(z)[0]))

    def shown_value(self, i: int, value: float) -> float:
        """``value`` as slider i shows it: rounded to its step, clamped to its range."""
        low, high, step = self.ranges[i]
        return min(max(round(value, max(0, -math.floor(math.log10(step)))), low), high)

    def slider_value(self, z: torch.Tensor, i: int) -> float:
        """Slider i's position for the face z (1, D): its coordinate along w_i (`editing.coordinate`)."""
        return self.shown_value(i, float(editing.coordinate(self.model, z, i)[0]))

    def prob_html(self, p: float) -> str:
        return f'<div class="bar"><span style="width:{100 * p:.0f}%"></span></div>q(present) = <b>{p:.2f}</b>'

    def partner_outputs(self, i: int, z: torch.Tensor) -> list:
        """The sliders, then the probabilities, of the labels exclusive with i (an edit of i may clear them)."""
        probs = editing.label_probs(self.model, z)[0].tolist()
        return [*(self.slider_value(z, j) for j in self.partners[i]),
                *(self.prob_html(probs[j]) for j in self.partners[i])]

    def view(self, session: Session, status: str) -> tuple:
        """Outputs shared by every whole-face action: edited, sliders, probs, status, session."""
        sliders = [self.slider_value(session.z, i) for i in range(len(self.labels))]
        probs = [self.prob_html(p) for p in editing.label_probs(self.model, session.z)[0].tolist()]
        return (self.face(session.z), *sliders, *probs, status, session)

    def start_from(self, shown: str, z_source: torch.Tensor, status: str) -> tuple:
        """A new face: input (``shown``), reconstruction, then :meth:`view`'s outputs."""
        session = Session(z_source=z_source, z=z_source)
        return (shown, self.face(z_source), *self.view(session, status))

    def read_upload(self, path: str | None) -> tuple[Image.Image, torch.Tensor, str]:
        """An uploaded file -> (the aligned crop shown as the input, its latent (1, D), a note on
        the alignment and, beyond the model's held-out errors, on the photo's domain;
        `ccvae.photos`); a clear gr.Error for a missing or unreadable file. Every upload goes here."""
        if not path:
            raise gr.Error("No file was received; choose a PNG, JPEG or WebP photo.")
        try:
            aligned = photos.align_source(path, self.model.config["framing"], size=self.model.image_size)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        x = images.to_tensor(aligned.image).to(self.model.device)
        domain = photos.check_domain(self.model, x)
        note = aligned.message + (" " + domain.message if domain.is_out_of_domain else "")
        return aligned.image, editing.encode(self.model, x), note

    def random_latent(self, seed: int) -> tuple[list[str], torch.Tensor]:
        """(labels drawn present, z (1, D)) of the random face ``seed``: `editing.random_face`."""
        y, z = editing.random_face(self.model, generator=self._generator(seed))
        return [words(name) for name, v in zip(self.labels, y[0].tolist()) if v > 0.5], z

    def initial(self) -> tuple:
        return self.example(0)  # the page's first face

    def example(self, index: int) -> tuple:
        if not 0 <= index < len(self.examples):
            raise gr.Error(f"example {index} does not exist; there are {len(self.examples)}")
        z = editing.encode(self.model, images.to_tensor(self.examples[index]).to(self.model.device))
        return self.start_from(images.to_data_url(self.examples[index]), z, f"Example {index + 1}.")

    def random_face(self, *, seed: int | None = None) -> tuple:
        seed = pick_seed(seed)
        present, z = self.random_latent(seed)
        status = f"Random face (seed {seed}) drawn with: {', '.join(present) or 'no labels'}."
        return self.start_from(self.face(z), z, status)

    def upload(self, path: str | None) -> tuple:
        image, z, note = self.read_upload(path)
        return self.start_from(images.to_data_url(image), z, note)

    def slide(self, i: int, value: float, session: Session, *, is_released: bool = True) -> tuple:
        """Slider i moved to ``value`` (`editing.intervene`): face, q(y_i | z_i), :meth:`partner_outputs`, session.
        A move while dragging (``is_released=False``: the live path) joins the drag's undo step; the
        release (the slider's event, the API) ends it."""
        z = editing.intervene(self.model, session.z, i, float(value))
        p = float(editing.label_probs(self.model, z)[0, i])
        session = session.edited(z, drag=i)
        return (self.face(z), self.prob_html(p), *self.partner_outputs(i, z),
                session.released() if is_released else session)

    def resample(self, i: int, session: Session, *, present: bool | None = None, seed: int | None = None) -> tuple:
        """New z_i ~ p(z_i | y_i = present) on that side of the classifier (`editing.sample_characteristic`);
        present=None keeps the side the face is on. Returns
        the face, slider i, its probability, the status, :meth:`partner_outputs`, the session."""
        if present is None:
            present = bool(editing.is_present(self.model, session.z, i)[0])
        seed = pick_seed(seed)
        # A draw of the whole block z_i whose slider position lies inside the slider's range, unlike the
        # current one (one beyond would show at the end, often the face already shown); failing that
        # (a range far from the prior), the first draw. Its position is rounded as the slider shows it.
        low, high, _ = self.ranges[i]
        current = self.slider_value(session.z, i)
        draws = editing.resample_latent(self.model, session.z.expand(64, -1), i, present=present,
                                        generator=self._generator(seed))  # (64, D)
        ts = editing.coordinate(self.model, draws, i).tolist()
        pick = next((n for n, t in enumerate(ts) if low <= t <= high and self.shown_value(i, t) != current), 0)
        z = editing.intervene(self.model, draws[pick:pick + 1], i, self.shown_value(i, ts[pick]))
        p = float(editing.label_probs(self.model, z)[0, i])
        status = f"{words(self.labels[i])}: new sample with it {'present' if present else 'absent'} (seed {seed})."
        return (self.face(z), self.slider_value(z, i), self.prob_html(p), status, *self.partner_outputs(i, z),
                session.edited(z))

    def resample_style(self, session: Session, *, seed: int | None = None) -> tuple:
        seed = pick_seed(seed)
        z = editing.resample_style(self.model, session.z, generator=self._generator(seed))
        return self.view(session.edited(z), f"New style, characteristics kept (seed {seed}).")

    def reset(self, session: Session) -> tuple:
        return self.view(session.edited(session.z_source),
                         "Back to the encoding of the input (Undo brings the edit back).")

    def undo(self, session: Session) -> tuple:
        """The face before the last edit (:meth:`Session.undo`), sliders and probabilities following it."""
        if not session.can_undo:
            return self.view(session.undo(), "Nothing to undo.")
        return self.view(session.undo(), "Undone (Redo brings it back).")

    def redo(self, session: Session) -> tuple:
        if not session.can_redo:
            return self.view(session.redo(), "Nothing to redo.")
        return self.view(session.redo(), "Redone.")

    def sheet(self, zs: torch.Tensor, columns: int) -> str:
        """Latents (..., D) decoded, in order, as one PNG of ``columns`` faces a row."""
        faces = editing.decode(self.model, zs.reshape(-1, zs.shape[-1]))
        return images.to_data_url(images.grid(images.to_pil(faces), columns=columns))

    def traversal(self, label: str, session: Session) -> str:
        """8 steps of one label from absent to present, each set as its slider sets it."""
        return self.sheet(editing.traverse(self.model, session.z, self.label_index(label), steps=8, as_edits=True), 8)

    def diversity(self, label: str, session: Session, *, seed: int | None = None) -> tuple[str, str]:
        """16 draws of one characteristic on its current side, everything else fixed."""
        i = self.label_index(label)
        present = bool(editing.is_present(self.model, session.z, i)[0])
        seed = pick_seed(seed)
        zs = editing.resample_latent(self.model, session.z.repeat(16, 1), i, present=present,
                                     generator=self._generator(seed), as_edits=True)
        side = "present" if present else "absent"
        return self.sheet(zs, 4), f"16 samples of {words(self.labels[i])} ({side}), seed {seed}."

    def grid2d(self, row_label: str, column_label: str, session: Session) -> str:
        """5x5 faces: rows walk ``row_label`` absent -> present, columns ``column_label``."""
        i, j = self.label_index(row_label), self.label_index(column_label)
        if i == j:
            raise gr.Error(f"choose two different labels for the grid (both are {row_label!r})")
        return self.sheet(editing.traverse_grid(self.model, session.z, i, j, steps=5, as_edits=True), 5)

    def donor_random(self, session: Session, *, seed: int | None = None) -> tuple[str, str, Session]:
        seed = pick_seed(seed)
        _, z = self.random_latent(seed)
        return self.face(z), f"Random second face (seed {seed}).", session._replace(z_donor=z)

    def donor_upload(self, path: str | None, session: Session) -> tuple[str, str, Session]:
        image, z, note = self.read_upload(path)
        return images.to_data_url(image), f"Second face uploaded. {note}", session._replace(z_donor=z)

    def swap(self, label: str, session: Session) -> tuple:
        i = self.label_index(label)
        if session.z_donor is None:
            raise gr.Error("Choose a second face first (Random second face or upload one).")
        # the donor's whole z_i, set as a slider move sets it (a donor's hair colour replaces this face's)
        z = editing.swap(self.model, session.z, session.z_donor, i, as_edits=True)
        return self.view(session.edited(z), f"{words(self.labels[i])} swapped in from the second face.")


def picture(value: str | None, label: str, *, height: str, filename: str | None = None,
            html_template: str | None = None, **kwargs) -> gr.HTML:
    """An image output: its value is a PNG data URL, shown ``height`` high (a CSS length) and
    as wide as its column; ``filename`` adds a link that downloads the PNG under that name."""
    kwargs.setdefault("js_on_load", None)
    template = html_template or (DOWNLOADABLE_HTML if filename else PICTURE_HTML)
    return gr.HTML(value, label=label, show_label=True, container=True, html_template=template,
                   css_template=asset("picture.css"), alt=label, filename=filename, img_height=height, **kwargs)


def launch_options() -> dict:
    """The keyword arguments of ``demo.launch`` that every launch shares (app, tests, benchmark)."""
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return dict(theme=theme, css=asset("page.css"), max_file_size=MAX_FILE_SIZE, run_history=False,
                state_session_capacity=GRADIO_SESSIONS_KEPT)


def build_demo(model: CCVAE, *, examples: Sequence[Image.Image] = (), notice: str | None = None,
               concurrency: int = 2, session_ttl_s: float = SESSION_TTL_S) -> gr.Blocks:
    """The page for ``model`` (already on its device, in eval mode). Launches nothing."""
    editor = Editor(model, examples=examples)
    sessions = SessionStore(session_ttl_s)
    num_labels = len(editor.labels)
    with torch.no_grad():
        first = editor.initial()  # input, reconstruction, edited, sliders, probs, status, session
    first_session = first[-1]

    def edits(method: Callable, *, takes_session: bool = True, changes: bool = True) -> Callable:
        """A Gradio handler: ``method(*inputs, session)`` on the caller's session (a new one: the first face;
        ``takes_session=False``: ``method(*inputs)``), storing the session it returns (its last output)."""
        def handler(request: gr.Request, *inputs):
            session = sessions.get(request.session_hash) or first_session
            with torch.no_grad():
                out = method(*inputs, session) if takes_session else method(*inputs)
            if not changes:
                return out
            sessions.put(request.session_hash, out[-1])
            return out[:-1]
        return handler

    def live_slide(data) -> dict:
        """A live move (app_assets/live_slider.js) ``[session hash, label index, value]``, made as the slider's event
        makes it -> ``{"face", "prob", "others": {index: prob of a label exclusive with this one}}``,
        or ``{"error": message}`` for a malformed move or a session never opened or expired."""
        try:
            key, i, value = parse_live_move(data, num_labels)
            session = sessions.get(key)
            if session is None:
                raise gr.Error(f"session {key!r:.100} is unknown or has expired: reload the page")
        except gr.Error as error:
            return {"error": error.message}
        low, high, _ = editor.ranges[i]
        with torch.no_grad():
            face, prob, *partners, session = editor.slide(i, min(max(value, low), high), session, is_released=False)
        sessions.put(key, session)
        others = dict(zip(map(str, editor.partners[i]), partners[len(editor.partners[i]):]))
        return {"face": face, "prob": prob, "others": others}

    def open_page(request: gr.Request) -> str:
        sessions.put(request.session_hash, first_session)
        return request.session_hash

    def close_page(request: gr.Request) -> None:
        sessions.pop(request.session_hash)

    with gr.Blocks(title="CCVAE face editor", analytics_enabled=False) as demo:
        demo.sessions = sessions  # for tests and the benchmark: how many sessions are held
        gr.Markdown("# CCVAE face editor\nEdit a face one characteristic at a time with "
                    "[Characteristic Capturing VAEs](https://arxiv.org/abs/2006.10102).", elem_id="title")
        gr.Markdown(notice or "", visible=bool(notice), elem_id="notice")
        live_session = gr.HTML(None, visible="hidden", elem_id="live-session", js_on_load=asset("session.js"))
        # Side by side (>= 1024 px): the start, the face (sticky) and its tools, one compact row per
        # label. Stacked (a phone): the face (sticky, smaller), its tools, the rows, then the start.
        with gr.Row(elem_id="editor"):
            with gr.Column(scale=1, min_width=200, elem_id="start-column"):
                gallery = gr.Gallery(list(editor.examples), label="Example faces (click one)", columns=4,
                                     height=260, allow_preview=False, show_label=True, elem_id="examples")
                with gr.Row():
                    random_button = gr.Button("Random face", elem_id="random-face")
                    upload_button = gr.UploadButton("Upload a photo", file_types=UPLOAD_TYPES, elem_id="upload")
                with gr.Row():
                    input_image = picture(first[0], "Input", height="160px", elem_id="input")
                    reconstruction_image = picture(first[1], "Reconstruction", height="160px",
                                                   elem_id="reconstruction")
            with gr.Column(scale=1, min_width=280, elem_id="face-column"):
                edited_face = picture(first[2], "Edited", height="320px", filename="edited-face.png",
                                      html_template=EDITED_HTML, start=first[1], elem_id="edited",
                                      js_on_load=asset("live_slider.js") + asset("compare.js"),
                                      server_functions=[live_slide], notice="",
                                      labels=json.dumps([slug(name) for name in editor.labels]))
                with gr.Row(elem_id="face-tools"):
                    undo_button = gr.Button("↶ Undo", size="sm", elem_id="undo")
                    redo_button = gr.Button("↷ Redo", size="sm", elem_id="redo")
                    style_button = gr.Button("Resample style", size="sm", elem_id="resample-style")
                    reset_button = gr.Button("Reset", size="sm", elem_id="reset")
                status = gr.Markdown(first[-2], elem_id="status")
            with gr.Column(scale=2, min_width=360, elem_id="label-rows"):
                sliders, probs, label_buttons = [], [], []
                for i, name in enumerate(editor.labels):
                    low, high, step = editor.ranges[i]
                    # the slider's ends are named absent / present (page.css); "flipped": present on the left
                    with gr.Row(elem_classes=["label-row", "flipped" if editor.is_flipped[i] else "upright"]):
                        sliders.append(gr.Slider(low, high, first[3 + i], step=step, label=words(name),
                                                 buttons=[], elem_classes="label-slider",
                                                 elem_id=f"slider-{slug(name)}"))
                        probs.append(gr.HTML(first[3 + num_labels + i], elem_classes="prob",
                                             elem_id=f"prob-{slug(name)}", min_width=0,
                                             js_on_load=asset("prob.js"), index=i))
                        with gr.Row(elem_classes="label-buttons"):
                            label_buttons.append(tuple(
                                gr.Button(f"{verb} {words(name)}", size="sm", elem_classes=verb.lower(),
                                          min_width=0, elem_id=f"{verb.lower()}-{slug(name)}")
                                for verb in ("Resample", "Add", "Remove")))

        choices = [(words(name), name) for name in editor.labels]
        with gr.Accordion("More: traversals, grids and swapping", open=False):
            with gr.Row():
                with gr.Column():
                    traversal_label = gr.Dropdown(choices, value=editor.labels[0], label="Label")
                    traversal_button = gr.Button("Traversal strip (8 steps, absent → present)")
                    diversity_button = gr.Button("Diversity grid (16 resamples)")
                with gr.Column(scale=3):
                    strip_image = picture(None, "Traversal", height="auto", filename="traversal.png")
                    diversity_image = picture(None, "Diversity", height="300px", filename="diversity.png")
            with gr.Row():
                with gr.Column():
                    row_label = gr.Dropdown(choices, value=editor.labels[0], label="Rows")
                    column_label = gr.Dropdown(choices, value=editor.labels[min(1, num_labels - 1)], label="Columns")
                    grid_button = gr.Button("5×5 grid over two labels")
                with gr.Column(scale=3):
                    grid_image = picture(None, "Two-label grid", height="300px", filename="grid.png")
            with gr.Row():
                with gr.Column():
                    swap_label = gr.Dropdown(choices, value=editor.labels[0], label="Characteristic")
                    donor_random_button = gr.Button("Random second face")
                    donor_upload_button = gr.UploadButton("Upload second face", file_types=UPLOAD_TYPES)
                    swap_button = gr.Button("Swap it in from the second face")
                with gr.Column(scale=3):
                    donor_image = picture(None, "Second face", height="200px", filename="second-face.png")
        gr.Markdown(asset("how_it_works.md"))

        view_outputs = [edited_face, *sliders, *probs, status]
        face_outputs = [input_image, reconstruction_image, *view_outputs]

        def starts(method: Callable) -> Callable:
            """A handler of a new face: the edited face also keeps it as the face to compare with."""
            handler = edits(method, takes_session=False)

            def new_face(request: gr.Request, *inputs):
                shown, reconstruction, face, *rest = handler(request, *inputs)
                return (shown, reconstruction, gr.HTML(face, start=reconstruction), *rest)
            return new_face

        def on_example(evt: gr.SelectData, request: gr.Request):
            return starts(editor.example)(request, evt.index)

        demo.load(open_page, None, live_session, api_visibility="private", show_progress="hidden")
        demo.unload(close_page)
        gallery.select(on_example, None, face_outputs, api_name="example")
        random_button.click(starts(editor.random_face), None, face_outputs, api_name="random_face")
        upload_button.upload(starts(editor.upload), upload_button, face_outputs, api_name="upload")
        style_button.click(edits(editor.resample_style), None, view_outputs, api_name="resample_style")
        reset_button.click(edits(editor.reset), None, view_outputs, api_name="reset")
        undo_button.click(edits(editor.undo), None, view_outputs, api_name="undo", show_progress="hidden")
        redo_button.click(edits(editor.redo), None, view_outputs, api_name="redo", show_progress="hidden")

        for i, name in enumerate(editor.labels):
            partners = [sliders[j] for j in editor.partners[i]] + [probs[j] for j in editor.partners[i]]
            # Moves while dragging go through live_slide (live_slider.js); the end of a drag or a typed
            # value, through this event, the API: the page sends it off the queue (never behind a grid);
            # API clients come through the queue, where the moves of every slider share one group
            # with room for a whole decoder batch, so they reach the MicroBatcher together.
            sliders[i].release(
                edits(lambda value, s, i=i: editor.slide(i, value, s)), sliders[i],
                [edited_face, probs[i], *partners], api_name=f"slide_{slug(name)}",
                trigger_mode="always_last", show_progress="hidden", queue=False,
                concurrency_limit=MAX_BATCH, concurrency_id="slide")
            outputs = [edited_face, sliders[i], probs[i], status, *partners]
            for button, present, verb in zip(label_buttons[i], (None, True, False), ("resample", "add", "remove")):
                button.click(edits(lambda s, i=i, present=present: editor.resample(i, s, present=present)), None,
                             outputs, api_name=f"{verb}_{slug(name)}", show_progress="hidden")

        traversal_button.click(edits(editor.traversal, changes=False), traversal_label, strip_image,
                               api_name="traversal")
        diversity_button.click(edits(editor.diversity, changes=False), traversal_label,
                               [diversity_image, status], api_name="diversity")
        grid_button.click(edits(editor.grid2d, changes=False), [row_label, column_label], grid_image, api_name="grid")
        donor_random_button.click(edits(editor.donor_random), None, [donor_image, status], api_name="donor_random")
        donor_upload_button.upload(edits(editor.donor_upload), donor_upload_button, [donor_image, status],
                                   api_name="donor_upload")
        swap_button.click(edits(editor.swap), swap_label, view_outputs, api_name="swap")

    demo.queue(default_concurrency_limit=concurrency, max_size=256)
    return demo


def load_examples(checkpoint: Path) -> list[Image.Image]:
    """Held-out faces shipped beside a checkpoint as ``examples/*.png`` (may be none)."""
    folder = checkpoint / "examples"
    if not folder.is_dir():
        return []
    return [Image.open(path).convert("RGB") for path in sorted(folder.glob("*.png"))[:NUM_EXAMPLES]]


def load_model(checkpoint: str) -> tuple[CCVAE, Path | None, str | None]:
    """(model, local folder or None, notice or None): a local model or run folder that fails to
    load is a CheckpointError; a Hub id that cannot be loaded falls back to the bundled model, with a notice."""
    if Path(checkpoint).exists() or checkpoint.startswith((".", "/", "~")):
        folder = model_dir(checkpoint)  # a training run's folder gives its model/
        return CCVAE.from_pretrained(folder), folder, None
    try:
        return CCVAE.from_pretrained(checkpoint), None, None
    except (OSError, ValueError) as error:
        reason = html.escape((str(error).splitlines() or [""])[0])
        notice = (f"⚠️ Could not load the model {checkpoint!r} from the Hugging Face Hub "
                  f"({type(error).__name__}: {reason}). Showing the bundled model instead.")
        return CCVAE.from_pretrained(str(BUNDLED_CHECKPOINT)), BUNDLED_CHECKPOINT, notice


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=os.environ.get("CCVAE_CHECKPOINT", str(BUNDLED_CHECKPOINT)),
                        help="a training run's folder, its model/ folder, or a Hugging Face Hub id "
                             "(default: $CCVAE_CHECKPOINT or the bundled model)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="events run at once (default: the number of CPU cores; 4 on a GPU)")
    parser.add_argument("--session-ttl", type=float, default=SESSION_TTL_S, metavar="SECONDS",
                        help=f"forget a session's edit after this long unused (default {SESSION_TTL_S:.0f})")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    device = default_device()
    try:
        model, folder, notice = load_model(args.checkpoint)
    except CheckpointError as error:
        raise SystemExit(f"error: --checkpoint: {error}") from None
    model.to(device).eval()
    if device.type == "cpu":
        # One intra-op thread: concurrent slider moves share a batched decode (Editor.decoder),
        # which a second thread barely speeds up, while the other cores serve HTTP and handler
        # threads calling torch at once never oversubscribe.
        torch.set_num_threads(1)
    concurrency = args.concurrency or (os.cpu_count() or 2 if device.type == "cpu" else 4)
    examples = load_examples(folder) if folder is not None else []
    demo = build_demo(model, examples=examples, notice=notice, concurrency=concurrency,
                      session_ttl_s=args.session_ttl)
    demo.launch(**launch_options())


if __name__ == "__main__":
    main(parse_args())
