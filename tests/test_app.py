"""app.py's handlers called directly on a tiny random model: each asserts what the user sees."""

import base64
import io
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import app
import app_sessions
from ccvae import CCVAE, CheckpointError, editing, images

LABELS = ["Eyeglasses", "Smiling", "Male"]
L = len(LABELS)
SIZE = 16
REPO = Path(__file__).resolve().parents[1]


def visible_model() -> CCVAE:
    """A tiny random CCVAE whose decoder is loud enough for one latent to change pixels."""
    torch.manual_seed(0)
    model = CCVAE(label_names=LABELS, latent_dim=6, image_size=SIZE, channels=[8, 8], hidden_dim=16)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(2.5)
    return model.eval()


@pytest.fixture(scope="module")
def editor() -> app.Editor:
    return app.Editor(visible_model())


@pytest.fixture
def session(editor) -> app.Session:
    return editor.initial()[-1]


def from_data_url(url: str) -> Image.Image:
    """An image output's value (a PNG data URL) decoded."""
    header, _, data = url.partition(",")
    assert header == "data:image/png;base64", url[:40]
    return images.open_image(base64.b64decode(data, validate=True))


def pixels(image: Image.Image | str) -> np.ndarray:
    """An image, or an image output's data URL, as an (H, W, 3) int array."""
    if isinstance(image, str):
        image = from_data_url(image)
    return np.asarray(image).astype(int)


def descendants(block) -> list:
    """Every block inside a layout block (Gradio wraps form components in a gr.Form of its own)."""
    children = list(getattr(block, "children", []))
    return children + [d for c in children for d in descendants(c)]


def write(tmp_path: Path, name: str, image: Image.Image, fmt: str, **kwargs) -> str:
    path = tmp_path / name
    image.save(path, format=fmt, **kwargs)
    return str(path)


# ---- the page's first face and the view ----------------------------------------------------


def test_initial_outputs_follow_the_widget_order(editor):
    out = editor.initial()
    assert len(out) == 3 + 2 * L + 2  # input, reconstruction, edited, sliders, probs, status, session
    input_image, reconstruction, edited = (from_data_url(url) for url in out[:3])
    assert input_image.size == reconstruction.size == edited.size == (SIZE, SIZE)
    assert np.array_equal(pixels(edited), pixels(reconstruction))  # nothing edited yet
    session = out[-1]
    assert isinstance(session, app.Session) and torch.equal(session.z, session.z_source)
    for i, value in enumerate(out[3 : 3 + L]):
        low, high, _ = editor.ranges[i]
        assert low <= value <= high


def test_slider_ranges_come_from_the_conditional_prior_and_mark_their_ends(editor):
    from ccvae import editing

    for i in range(L):
        absent, present = editing.traversal_range(editor.model, i)
        low, high, _ = editor.ranges[i]
        assert low <= min(absent, present) and max(absent, present) <= high
        assert editor.is_flipped[i] == (present < absent)


@pytest.mark.parametrize("low, high", [(-2.5001500248908997, 2.5001500248908997), (0.1234, 0.1299), (-40.7, 3.3)])
def test_slider_ends_are_short_decimals_covering_the_range(low, high):
    minimum, maximum, step = app.slider_range(low, high)
    assert minimum <= low and high <= maximum
    assert app.SLIDER_STEPS <= (maximum - minimum) / step <= 10 * app.SLIDER_STEPS + 2
    for end in (minimum, maximum, step):
        assert float(repr(end)) == end and len(repr(end)) <= 8  # what the browser sends back


def test_flipped_label_is_marked_present_on_the_left():
    model = visible_model()
    with torch.no_grad():
        model.prior_loc[:, 1] = torch.tensor([1.0, -1.0])  # "present" mean below "absent" mean
    editor = app.Editor(model)
    assert editor.is_flipped == [False, True, False]
    demo = app.build_demo(model)
    # each label's row is marked, and page.css names the slider's left end "present" in a flipped row
    rows = [c for c in demo.blocks.values() if isinstance(c, gr.Row) and "label-row" in (c.elem_classes or [])]
    sides = {next(s.label for s in descendants(row) if isinstance(s, gr.Slider)): set(row.elem_classes) for row in rows}
    assert sides == {"Eyeglasses": {"label-row", "upright"}, "Smiling": {"label-row", "flipped"},
                     "Male": {"label-row", "upright"}}
    css = app.asset("page.css")
    assert '.flipped .slider_input_container::before { content: "present"; }' in css.replace(
        ".upright .slider_input_container::after, ", "")


# ---- one label ---------------------------------------------------------------------------------


def test_slide_changes_the_face_and_only_that_latent(editor, session):
    low, high, _ = editor.ranges[0]
    image_low, prob_low, s_low = editor.slide(0, low, session)
    image_high, prob_high, s_high = editor.slide(0, high, session)
    assert np.abs(pixels(image_low) - pixels(image_high)).mean() > 1
    changed = (s_low.z != session.z)[0]
    assert changed.tolist() == [True] + [False] * 5
    assert s_low.z[0, 0].item() == pytest.approx(low)
    assert torch.equal(session.z, session.z_source)  # the old session is untouched


def test_the_face_shown_is_the_decoders_output_pixel_for_pixel(editor, session):
    z = editing.set_latent(session.z, 1, editor.ranges[1][1])
    expected = images.to_pil(editing.decode(editor.model, z)[0])  # unbatched, no PNG
    assert np.array_equal(pixels(editor.face(z)), pixels(expected))


def test_concurrent_slides_share_decoder_calls_and_each_session_gets_its_own_face(session):
    """Eight sessions move at the same moment: their decodes are batched, and each gets the
    face (and probability) it would get alone."""
    editor = app.Editor(visible_model(), batch_wait_s=0.05)
    sizes = []
    decode = editor.decoder.fn
    editor.decoder.fn = lambda z: sizes.append(z.shape[0]) or decode(z)
    low, high, _ = editor.ranges[0]
    values = np.linspace(low, high, 8)
    alone = [editor.slide(0, v, session) for v in values]
    sizes.clear()
    together = [None] * len(values)
    barrier = threading.Barrier(len(values))

    def move(k):
        barrier.wait()
        together[k] = editor.slide(0, values[k], session)

    threads = [threading.Thread(target=move, args=(k,)) for k in range(len(values))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(sizes) == 8 and len(sizes) < 8, sizes
    for (face_a, prob_a, s_a), (face_t, prob_t, s_t) in zip(alone, together):
        assert np.abs(pixels(face_a) - pixels(face_t)).max() <= 1  # float rounding of a bigger batch
        assert prob_a == prob_t and torch.equal(s_a.z, s_t.z)
    # neighbouring slider values give clearly different faces: a mix-up could not pass the check above
    faces = [pixels(face) for face, _, _ in together]
    assert all(np.abs(a - b).max() > 1 for a, b in zip(faces, faces[1:]))


def test_probability_beside_the_slider_moves_with_it(editor, session):
    def q(html: str) -> float:
        return float(html.split("<b>")[1].split("</b>")[0])

    low, high, _ = editor.ranges[0]
    values = np.linspace(low, high, 5)
    probs = [q(editor.slide(0, v, session)[1]) for v in values]
    assert probs == sorted(probs) and probs[-1] > 0.5 > probs[0]


def test_resample_is_reproducible_by_seed_and_differs_between_seeds(editor, session):
    a = editor.resample(0, session, seed=1)
    b = editor.resample(0, session, seed=1)
    c = editor.resample(0, session, seed=2)
    assert torch.equal(a[-1].z, b[-1].z) and a[1] == b[1]
    assert a[1] != c[1]
    assert "seed 1" in a[3]
    assert (a[-1].z != session.z)[0].tolist() == [True] + [False] * 5


def test_resample_at_the_end_of_the_range_always_gives_a_new_value_inside_it(editor, session):
    # A draw beyond the range used to be shown at its end: with the slider already there the
    # face did not change (a Resample click that did nothing, seen as a flaky browser test).
    for i in range(len(editor.labels)):
        low, high, _ = editor.ranges[i]
        for end, present in ((high, True), (low, False)):
            at_end = editor.slide(i, end, session)[-1]
            values = [editor.resample(i, at_end, present=present, seed=seed)[1] for seed in range(40)]
            assert all(low <= v <= high and v != end for v in values), (i, end, values)


def test_add_draws_from_present_and_remove_from_absent(editor, session):
    # Same seed -> same standard normal draw; the "present" mean lies above the "absent" one.
    for seed in range(5):
        added = editor.resample(1, session, present=True, seed=seed)
        removed = editor.resample(1, session, present=False, seed=seed)
        assert added[1] > removed[1]
        assert added[-1].z[0, 1].item() == pytest.approx(added[1])  # slider shows the latent


def test_resample_keeps_the_side_the_slider_is_on(editor, session):
    low, high, _ = editor.ranges[2]
    on_present = editor.slide(2, high, session)[-1]
    on_absent = editor.slide(2, low, session)[-1]
    assert editor.resample(2, on_present, seed=3)[1] == editor.resample(2, on_present, present=True, seed=3)[1]
    assert editor.resample(2, on_absent, seed=3)[1] == editor.resample(2, on_absent, present=False, seed=3)[1]


# ---- the whole face ----------------------------------------------------------------------------


def test_resample_style_keeps_every_characteristic(editor, session):
    out = editor.resample_style(session, seed=4)
    new = out[-1]
    assert torch.equal(new.z[:, :L], session.z[:, :L])
    assert not torch.equal(new.z[:, L:], session.z[:, L:])
    assert list(out[1 : 1 + L]) == [editor.slider_value(session.z, i) for i in range(L)]


def test_reset_returns_to_the_encoding_of_the_input(editor, session):
    edited = editor.resample(0, editor.resample_style(session, seed=5)[-1], seed=6)[-1]
    out = editor.reset(edited)
    assert torch.equal(out[-1].z, session.z_source)
    assert np.array_equal(pixels(out[0]), pixels(editor.face(session.z_source)))


def test_traversal_strip_diversity_and_two_label_grid(editor, session):
    strip = from_data_url(editor.traversal("Smiling", session))
    assert strip.size == (8 * SIZE, SIZE)
    sheet, status = editor.diversity("Eyeglasses", session, seed=7)
    sheet = from_data_url(sheet)
    assert sheet.size == (4 * SIZE, 4 * SIZE) and "seed 7" in status
    tiles = pixels(sheet).reshape(4, SIZE, 4, SIZE, 3).transpose(0, 2, 1, 3, 4).reshape(16, -1)
    assert len({tile.tobytes() for tile in tiles}) > 8  # resamples differ
    grid = from_data_url(editor.grid2d("Eyeglasses", "Male", session))
    assert grid.size == (5 * SIZE, 5 * SIZE)
    corners = pixels(grid)
    assert np.abs(corners[:SIZE, :SIZE] - corners[-SIZE:, -SIZE:]).mean() > 1


def test_grids_refuse_bad_labels_with_a_message_naming_them(editor, session):
    with pytest.raises(gr.Error, match="different labels.*Male"):
        editor.grid2d("Male", "Male", session)
    with pytest.raises(gr.Error, match="'Beard'"):
        editor.traversal("Beard", session)


def test_swap_takes_the_characteristic_from_the_second_face(editor, session):
    with pytest.raises(gr.Error, match="second face"):
        editor.swap("Smiling", session)
    _, _, with_donor = editor.donor_random(session, seed=8)
    out = editor.swap("Smiling", with_donor)
    swapped = out[-1].z
    assert swapped[0, 1] == with_donor.z_donor[0, 1]
    assert torch.equal(torch.cat([swapped[:, :1], swapped[:, 2:]], 1),
                       torch.cat([session.z[:, :1], session.z[:, 2:]], 1))


def test_random_face_is_reproducible_and_reports_its_seed(editor):
    a, b = editor.random_face(seed=9), editor.random_face(seed=9)
    assert torch.equal(a[-1].z, b[-1].z) and "seed 9" in a[-2]
    assert not torch.equal(a[-1].z, editor.random_face(seed=10)[-1].z)


def test_examples_are_selectable_and_out_of_range_is_refused(editor):
    assert len(editor.examples) == app.NUM_EXAMPLES  # decoded faces when none are bundled
    assert not torch.equal(editor.example(0)[-1].z, editor.example(1)[-1].z)
    with pytest.raises(gr.Error, match="example 99"):
        editor.example(99)


# ---- uploads -----------------------------------------------------------------------------------


def photo(width=90, height=60) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize(
    "name, make",
    [
        ("photo.png", lambda p: write(p, "photo.png", photo(), "PNG")),
        ("photo.jpg", lambda p: write(p, "photo.jpg", photo(), "JPEG")),
        ("photo.webp", lambda p: write(p, "photo.webp", photo(), "WEBP")),
        ("gray.png", lambda p: write(p, "gray.png", photo().convert("L"), "PNG")),
        ("rgba.png", lambda p: write(p, "rgba.png", photo().convert("RGBA"), "PNG")),
        ("cmyk.jpg", lambda p: write(p, "cmyk.jpg", photo().convert("CMYK"), "JPEG")),
        ("deep.png", lambda p: write(p, "deep.png", Image.fromarray(np.full((40, 50), 40000, np.uint16)), "PNG")),
        ("anim.gif", lambda p: write(p, "anim.gif", photo(), "GIF", save_all=True,
                                     append_images=[photo(90, 60).rotate(90)])),
    ],
)
def test_upload_accepts_every_common_kind_of_photo(editor, tmp_path, name, make):
    out = editor.upload(make(tmp_path))
    assert from_data_url(out[0]).size == (SIZE, SIZE)  # decoded as RGB
    assert torch.equal(out[-1].z, out[-1].z_source)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"%PDF-1.4 definitely not a picture", "not an image"),
        (None, "truncated"),
        (b"tiny", "not an image"),
    ],
    ids=["not-an-image", "truncated", "garbage"],
)
def test_upload_of_bad_files_is_answered_with_a_message(editor, tmp_path, content, words):
    path = tmp_path / "upload.png"
    if content is None:
        buffer = io.BytesIO()
        photo(200, 200).save(buffer, format="PNG")
        content = buffer.getvalue()[:400]
    path.write_bytes(content)
    with pytest.raises(gr.Error, match=words):
        editor.upload(str(path))


def test_upload_of_tiny_and_huge_images_is_refused(editor, tmp_path):
    with pytest.raises(gr.Error, match="1x1"):
        editor.upload(write(tmp_path, "dot.png", Image.new("RGB", (1, 1)), "PNG"))
    from test_images import png_header_only

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))
    with pytest.raises(gr.Error, match="too large"):
        editor.upload(str(bomb))
    with pytest.raises(gr.Error, match="No file"):
        editor.upload(None)


# ---- starting the app ----------------------------------------------------------------------


def test_import_loads_no_model_and_opens_no_port():
    code = (
        "import gradio, ccvae\n"
        "def refuse(*args, **kwargs): raise SystemExit('a model was built at import')\n"
        "ccvae.CCVAE.__init__ = refuse\n"
        "ccvae.CCVAE.from_pretrained = classmethod(refuse)\n"
        "gradio.Blocks.launch = refuse\n"
        "import app\n"
        "assert not any(isinstance(v, gradio.Blocks) for v in vars(app).values())\n"
    )
    env = {**os.environ, "CCVAE_CHECKPOINT": "/nonexistent/model", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_checkpoint_comes_from_flag_or_environment(monkeypatch):
    monkeypatch.setenv("CCVAE_CHECKPOINT", "someone/faces")
    assert app.parse_args([]).checkpoint == "someone/faces"
    assert app.parse_args(["--checkpoint", "/tmp/x"]).checkpoint == "/tmp/x"
    monkeypatch.delenv("CCVAE_CHECKPOINT")
    assert Path(app.parse_args([]).checkpoint) == app.BUNDLED_CHECKPOINT


def test_unreachable_hub_id_falls_back_to_the_bundled_model_with_a_notice(tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    visible_model().save_pretrained(bundled)
    monkeypatch.setattr(app, "BUNDLED_CHECKPOINT", bundled)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, no network
    model, folder, notice = app.load_model("nobody-here/no-such-ccvae-model")
    assert folder == bundled and model.label_names == LABELS
    assert "nobody-here/no-such-ccvae-model" in notice and "bundled" in notice
    demo = app.build_demo(model, notice=notice)
    shown = [c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "notice"][0]
    assert shown.visible and "no-such-ccvae-model" in shown.value


def test_a_broken_local_folder_is_an_error_not_a_fallback(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError):
        app.load_model(str(tmp_path))


def test_examples_are_read_from_the_checkpoint_folder(tmp_path):
    (tmp_path / "examples").mkdir()
    for k in range(3):
        Image.new("RGB", (SIZE, SIZE), (k * 80, 0, 0)).save(tmp_path / "examples" / f"{k}.png")
    examples = app.load_examples(tmp_path)
    assert [e.getpixel((0, 0))[0] for e in examples] == [0, 80, 160]
    editor = app.Editor(visible_model(), examples=examples)
    assert len(editor.examples) == 3
    assert app.load_examples(tmp_path / "missing") == []


def test_build_demo_launches_nothing_and_wires_one_slider_per_label():
    demo = app.build_demo(visible_model())
    sliders = [c for c in demo.blocks.values() if isinstance(c, gr.Slider)]
    assert [s.label for s in sliders] == LABELS
    names = {d.api_name for d in demo.fns.values()}
    assert {"slide_Eyeglasses", "resample_Eyeglasses", "add_Smiling", "remove_Male", "swap", "grid"} <= names
    slide = [d for d in demo.fns.values() if d.api_name == "slide_Eyeglasses"][0]
    assert [event for _, event in slide.targets] == ["release"]  # moves while dragging: live_slide
    assert slide.trigger_mode == "always_last" and slide.show_progress == "hidden"
    assert not slide.queue  # a move never waits behind a queued grid
    assert [type(c).__name__ for c in slide.outputs] == ["HTML", "HTML"]
    assert not demo.is_running
    edited = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "edited")
    assert [fn.__name__ for fn in edited.server_fns] == ["live_slide"]


@pytest.mark.parametrize("data, message", [
    ("abc", "is [session hash, label index, value]"),
    (["h", 0], "is [session hash, label index, value]"),
    ([None, 0, 1.0], "needs the session hash"),
    (["h", 3, 1.0], "label index must be an integer in [0, 3)"),
    (["h", True, 1.0], "label index must be an integer"),
    (["h", "0", 1.0], "label index must be an integer"),
    (["h", 0, float("nan")], "finite number"),
    (["h", 0, "1"], "finite number"),
])
def test_a_bad_live_move_is_named(data, message):
    with pytest.raises(gr.Error, match=re.escape(message)):
        app.parse_live_move(data, 3)
    assert app.parse_live_move(["h", 2, 1], 3) == ("h", 2, 1.0)



def test_the_app_keeps_its_sessions_in_its_own_store_not_in_gradio():
    """No gr.State: Gradio's per-session records hold nothing of the app's, so the number of
    them Gradio keeps (launch's state_session_capacity) can be small."""
    demo = app.build_demo(visible_model())
    assert not [c for c in demo.blocks.values() if isinstance(c, gr.State)]
    assert isinstance(demo.sessions, app.SessionStore) and len(demo.sessions) == 0
    assert app.launch_options()["state_session_capacity"] == app.GRADIO_SESSIONS_KEPT
    events = {event for d in demo.fns.values() for _, event in d.targets}
    assert {"load", "unload"} <= events  # a page's session is opened on load and dropped on unload


def test_session_store_keeps_each_key_apart_and_forgets_unused_ones():
    clock = [100.0]
    store = app.SessionStore(ttl_s=10, clock=lambda: clock[0])
    alice, bob = (app.Session(z_source=torch.full((1, 6), v), z=torch.full((1, 6), v)) for v in (1.0, 2.0))
    store.put("alice", alice)
    clock[0] += 6
    store.put("bob", bob)
    assert store.get("alice") is alice and store.get("bob") is bob and store.get("carol") is None
    clock[0] += 9  # alice was used 9 s ago (the get renewed her), bob 9 s ago
    assert len(store) == 2
    assert store.get("alice") is alice
    clock[0] += 2  # bob unused for 11 s: gone; alice used 2 s ago
    assert store.get("bob") is None and len(store) == 1
    store.pop("alice")
    store.pop("nobody")
    assert len(store) == 0
    with pytest.raises(ValueError, match="positive number of seconds, got 0"):
        app.SessionStore(ttl_s=0)


def test_live_path_edits_only_its_own_session_and_refuses_unknown_or_expired_ones():
    clock = [0.0]
    demo = app.build_demo(visible_model(), session_ttl_s=60)
    demo.sessions.clock = lambda: clock[0]
    live_slide = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "edited").server_fns[0]
    editor = app.Editor(visible_model())
    start = editor.initial()[-1]
    demo.sessions.put("alice", start)
    demo.sessions.put("bob", start)
    low, high, _ = editor.ranges[0]
    answer = live_slide(["alice", 0, high + 100.0])  # beyond the range: shown at its end
    assert answer["face"] == editor.slide(0, high, start)[0] and "q(present)" in answer["prob"]
    assert demo.sessions.get("alice").z[0, 0].item() == pytest.approx(high)
    assert torch.equal(demo.sessions.get("bob").z, start.z)
    live_slide(["alice", 0, low])  # later moves of the same drag: still one undo step
    alice = demo.sessions.get("alice")
    assert alice.drag == 0 and len(alice.past) == 1 and torch.equal(alice.undo().z, start.z)
    assert live_slide(["carol", 0, low]) == {"error": "session 'carol' is unknown or has expired: reload the page"}
    clock[0] += 61
    assert "unknown or has expired" in live_slide(["alice", 0, low])["error"]


def test_labels_are_shown_as_words():
    assert app.words("Mouth_Slightly_Open") == "Mouth slightly open"
    assert app.words("No_Beard") == "No beard" and app.words("Eyeglasses") == "Eyeglasses"
    assert app.words("5_o_Clock_Shadow") == "5 o'clock shadow" and app.words("Wearing_RGB_Hat") == "Wearing RGB hat"
    labels = ["Mouth_Slightly_Open", "Black_Hair", "Smiling"]
    torch.manual_seed(0)
    model = CCVAE(label_names=labels, latent_dim=6, image_size=SIZE, channels=[8, 8], hidden_dim=16).eval()
    demo = app.build_demo(model)
    shown = [c.label for c in demo.blocks.values() if isinstance(c, gr.Slider)]
    assert shown == ["Mouth slightly open", "Black hair", "Smiling"]
    buttons = {c.value for c in demo.blocks.values() if isinstance(c, gr.Button)}
    assert {"Resample Mouth slightly open", "Add Black hair", "Remove Smiling"} <= buttons
    dropdown = next(c for c in demo.blocks.values() if isinstance(c, gr.Dropdown))
    assert dropdown.choices[0] == ("Mouth slightly open", "Mouth_Slightly_Open")  # the API takes the name
    editor = app.Editor(model)
    assert editor.label_index("Mouth slightly open") == editor.label_index("Mouth_Slightly_Open") == 0
    assert "Mouth slightly open" in editor.resample(0, editor.initial()[-1], seed=0)[3]


def test_no_result_goes_through_gradios_file_cache():
    """Every image the page updates is a data URL inside the response. (Gradio 6.31 writes an
    image output to <cache>/<hash of its bytes>/image.png, in place: two sessions showing the
    same image at once could make one browser fetch a truncated file.)"""
    demo = app.build_demo(visible_model())
    outputs = {type(c).__name__ for d in demo.fns.values() for c in d.outputs}
    assert outputs <= {"HTML", "Slider", "Markdown"}, outputs


# ---- exclusive labels (the hair colours) -----------------------------------------------------


def hair_model() -> CCVAE:
    """Two exclusive labels (as the hair colours are) and a free one; present where z_i > 0."""
    torch.manual_seed(0)
    model = CCVAE(label_names=["Black_Hair", "Brown_Hair", "Smiling"], latent_dim=6, image_size=SIZE,
                  channels=[8, 8], hidden_dim=16, exclusive_labels=[["Black_Hair", "Brown_Hair"]])
    with torch.no_grad():
        model.prior_loc.copy_(torch.tensor([[-2.0] * 3, [2.0] * 3]))
    return model.eval()


def brown_haired(editor: app.Editor) -> app.Session:
    z = torch.tensor([[-2.0, 2.0, 2.0, 0.0, 0.0, 0.0]])
    return app.Session(z_source=z, z=z)


def test_setting_a_hair_colour_present_clears_the_other_and_shows_it():
    editor = app.Editor(hair_model())
    assert editor.partners == [[1], [0], []]
    start = brown_haired(editor)
    low, high, _ = editor.ranges[0]
    face, prob, brown_slider, brown_prob, s = editor.slide(0, high, start)
    assert s.z[0, 0].item() == pytest.approx(high) and s.z[0, 1].item() == -2.0  # brown cleared
    assert brown_slider == editor.slider_value(s.z, 1) == -2.0 and "q(present) = <b>0.12</b>" in brown_prob
    assert s.z[0, 2].item() == 2.0 and torch.equal(s.z[:, 3:], start.z[:, 3:])  # nothing else moved
    kept = editor.slide(0, low, start)[-1]  # black stays absent: brown stays
    assert kept.z[0, 1].item() == 2.0
    added = editor.resample(0, start, present=True, seed=0)
    assert len(added) == 7 and added[-1].z[0, 1].item() == -2.0 and added[4] == -2.0
    assert len(editor.slide(2, high, start)) == 3  # Smiling has no exclusive partner
    # the second face's black hair replaces this face's brown hair
    donor = torch.tensor([[2.0, -2.0, -2.0, 1.0, 1.0, 1.0]])
    swapped = editor.swap("Black_Hair", start._replace(z_donor=donor))[-1]
    assert swapped.z[0, :3].tolist() == [2.0, -2.0, 2.0]


def test_strips_and_grids_show_the_edits_as_the_sliders_make_them(monkeypatch):
    editor = app.Editor(hair_model())
    start = brown_haired(editor)
    seen, decode = [], editing.decode
    monkeypatch.setattr(editing, "decode", lambda model, z: seen.append(z.clone()) or decode(model, z))
    editor.traversal("Black_Hair", start)
    strip = seen[-1]  # (8, D): Black_Hair from absent to present
    black = editing.label_probs(editor.model, strip)[:, 0] >= 0.5
    assert black.any() and not black.all()
    assert (strip[black, 1] == -2.0).all() and (strip[~black, 1] == 2.0).all()  # brown cleared where black is set
    assert torch.equal(strip[:, 2:], start.z[:, 2:].expand(8, -1))  # nothing else moved
    editor.grid2d("Black_Hair", "Smiling", start)
    grid = seen[-1].reshape(25, -1)
    black = editing.label_probs(editor.model, grid)[:, 0] >= 0.5
    assert (grid[black, 1] == -2.0).all() and (grid[~black, 1] == 2.0).all()
    editor.grid2d("Black_Hair", "Brown_Hair", start)  # a grid over both colours keeps both axes
    assert torch.equal(seen[-1].reshape(5, 5, -1), editing.traverse_grid(editor.model, start.z, 0, 1, steps=5)[0])
    both = app.Session(z_source=start.z, z=torch.tensor([[2.0, 2.0, 2.0, 0.0, 0.0, 0.0]]))
    editor.diversity("Black_Hair", both, seed=0)  # 16 new black hairs, as the Resample button draws them
    black = editing.label_probs(editor.model, seen[-1])[:, 0] >= 0.5
    assert black.sum() >= 12 and (seen[-1][black, 1] == -2.0).all() and (seen[-1][~black, 1] == 2.0).all()


def test_random_faces_never_draw_two_exclusive_labels():
    model = hair_model()
    model.set_label_prior([0.45, 0.45, 0.5])  # the factorised p(y) asks for both colours in 1 of 5 draws
    editor = app.Editor(model)
    for seed in range(40):
        status, session = editor.random_face(seed=seed)[-2:]
        assert not ("Black hair" in status and "Brown hair" in status), status
        assert not (session.z[0, :2] > 0).all(), seed  # drawn from p(z_i | y_i = 1) for at most one colour
        donor = editor.donor_random(session, seed=seed)[-1].z_donor
        assert not (donor[0, :2] > 0).all(), seed


def test_the_release_event_and_the_live_path_show_the_cleared_label():
    model = hair_model()
    demo = app.build_demo(model)
    outputs = {d.api_name: [type(c).__name__ for c in d.outputs] for d in demo.fns.values()}
    assert outputs["slide_Black_Hair"] == ["HTML", "HTML", "Slider", "HTML"]
    assert outputs["add_Brown_Hair"] == ["HTML", "Slider", "HTML", "Markdown", "Slider", "HTML"]
    assert outputs["slide_Smiling"] == ["HTML", "HTML"]
    edited = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "edited")
    editor = app.Editor(model)
    demo.sessions.put("h", brown_haired(editor))
    answer = edited.server_fns[0](["h", 0, editor.ranges[0][1]])
    assert set(answer) == {"face", "prob", "others"} and list(answer["others"]) == ["1"]
    assert "q(present) = <b>0.12</b>" in answer["others"]["1"]
    assert demo.sessions.get("h").z[0, 1].item() == -2.0


@pytest.fixture(scope="module")
def bundled_editor() -> app.Editor:
    model, folder, _ = app.load_model(str(app.BUNDLED_CHECKPOINT))
    return app.Editor(model.eval(), examples=app.load_examples(folder))


def test_a_real_photo_is_shown_aligned_and_called_far_from_the_training_faces(bundled_editor, tmp_path):
    from skimage import data as skdata

    from ccvae import photos

    path = write(tmp_path, "astronaut.png", Image.fromarray(skdata.astronaut()), "PNG")
    shown, *_, status, _ = bundled_editor.upload(path)
    expected = photos.align(Image.fromarray(skdata.astronaut()), bundled_editor.model.config["framing"], size=64)
    assert np.array_equal(pixels(shown), np.asarray(expected.image))  # the input picture is the aligned crop
    assert expected.is_aligned and expected.message in status
    assert "far from the faces" in status and "CCVAE_CHECKPOINT" in status
    # the second face goes through the same path
    _, donor_status, _ = bundled_editor.donor_upload(path, bundled_editor.initial()[-1])
    assert "far from the faces" in donor_status


def test_the_bundled_example_faces_are_not_called_far_from_the_training_faces(bundled_editor, tmp_path):
    for k, face in enumerate(bundled_editor.examples):
        status = bundled_editor.upload(write(tmp_path, f"example{k}.png", face, "PNG"))[-2]
        assert "far from the faces" not in status, (k, status)


def test_a_photo_without_a_face_is_centre_cropped_and_says_so(bundled_editor, tmp_path):
    status = bundled_editor.upload(write(tmp_path, "flat.png", Image.new("RGB", (300, 200), (90, 140, 60)), "PNG"))[-2]
    assert "no face" in status.lower()


# ---- undo, redo and the face to compare with -------------------------------------------------


def test_session_history_undoes_and_redoes_at_least_fifty_edits():
    zs = [torch.full((1, 6), float(k)) for k in range(61)]
    session = app.Session(z_source=zs[0], z=zs[0])
    assert not session.can_undo and torch.equal(session.undo().z, zs[0])  # nothing to undo: unchanged
    for z in zs[1:]:
        session = session.edited(z)
    assert len(session.past) == app_sessions.HISTORY_STEPS >= 50
    for k in range(60, 60 - app_sessions.HISTORY_STEPS, -1):
        assert torch.equal(session.z, zs[k])
        session = session.undo()
    assert torch.equal(session.z, zs[60 - app_sessions.HISTORY_STEPS]) and not session.can_undo  # the oldest kept
    for k in range(61 - app_sessions.HISTORY_STEPS, 61):
        session = session.redo()
        assert torch.equal(session.z, zs[k])
    assert not session.can_redo and torch.equal(session.redo().z, zs[60])
    # a new edit after an undo forgets what was undone
    session = session.undo().undo().edited(zs[5])
    assert not session.can_redo and torch.equal(session.undo().z, zs[58])
    assert session.edited(zs[5]) is session  # the face shown already: no step


def test_one_drag_is_one_undo_step_and_its_release_ends_it():
    z0, z1, z2, z3 = (torch.full((1, 6), float(k)) for k in range(4))
    start = app.Session(z_source=z0, z=z0)
    dragged = start.edited(z1, drag=0).edited(z2, drag=0).edited(z3, drag=0)
    assert torch.equal(dragged.z, z3) and len(dragged.past) == 1 and torch.equal(dragged.undo().z, z0)
    again = dragged.released().edited(z1, drag=0)  # a second drag of the same slider: a step of its own
    assert torch.equal(again.undo().z, z3)
    other = dragged.edited(z1, drag=1)  # another slider: a step of its own
    assert torch.equal(other.undo().z, z3)
    # a late live move that repeats the position of a drag already released is passed over by undo
    late = dragged.released().edited(z2, drag=0).edited(z3, drag=0)
    assert torch.equal(late.undo().z, z0)


def test_every_edit_can_be_undone_and_undo_redraws_the_face_and_the_sliders(editor, session):
    low, high, _ = editor.ranges[0]
    steps = [session]
    s = editor.slide(0, high, session, is_released=False)[-1]  # a drag: live moves, then the release
    s = editor.slide(0, low, s, is_released=False)[-1]
    steps.append(editor.slide(0, low, s)[-1])
    steps.append(editor.resample(1, steps[-1], seed=1)[-1])
    steps.append(editor.resample(2, steps[-1], present=True, seed=2)[-1])
    steps.append(editor.resample(2, steps[-1], present=False, seed=3)[-1])
    steps.append(editor.resample_style(steps[-1], seed=4)[-1])
    steps.append(editor.swap("Smiling", editor.donor_random(steps[-1], seed=5)[-1])[-1])
    steps.append(editor.reset(steps[-1])[-1])
    assert all(not torch.equal(a.z, b.z) for a, b in zip(steps, steps[1:]))
    current = steps[-1]
    for want in reversed(steps[:-1]):
        face, *sliders_and_probs, status, current = editor.undo(current)
        assert torch.equal(current.z, want.z) and status.startswith("Undone")
        assert np.array_equal(pixels(face), pixels(editor.face(want.z)))
        assert list(sliders_and_probs[:L]) == [editor.slider_value(want.z, i) for i in range(L)]
    assert editor.undo(current)[-2] == "Nothing to undo."
    for want in steps[1:]:
        current = editor.redo(current)[-1]
        assert torch.equal(current.z, want.z)
    assert editor.redo(current)[-2] == "Nothing to redo."
    assert not editor.random_face(seed=1)[-1].can_undo  # a new face starts a new history


def test_undo_redo_and_the_slider_events_are_wired_for_the_page_and_the_api():
    demo = app.build_demo(visible_model())
    events = {d.api_name: d for d in demo.fns.values()}
    assert {"undo", "redo"} <= set(events)
    assert [c.elem_id for c in events["undo"].outputs[:1]] == ["edited"]
    assert len(events["undo"].outputs) == len(events["resample_style"].outputs) == 1 + 2 * L + 1
    # the API's slider moves share one concurrency group with room for a whole decoder batch
    slides = [events[f"slide_{name}"] for name in LABELS]
    assert {(d.concurrency_id, d.concurrency_limit) for d in slides} == {("slide", app.MAX_BATCH)}
    edited = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "edited")
    assert from_data_url(edited.props["start"]).size == (SIZE, SIZE)  # the face to compare with: the first
    assert {c.elem_id for c in demo.blocks.values() if isinstance(c, gr.Button)} >= {"undo", "redo"}


def test_every_label_button_is_named_with_its_label():
    demo = app.build_demo(visible_model())
    for name in LABELS:
        buttons = {c.elem_id: c.value for c in demo.blocks.values() if isinstance(c, gr.Button)}
        for verb in ("Resample", "Add", "Remove"):
            assert buttons[f"{verb.lower()}-{name}"] == f"{verb} {name}"  # its accessible name
