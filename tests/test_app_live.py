"""The app launched for real: gradio_client sessions and a real browser (Debian's Chromium)."""

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from ccvae import images
from test_app import from_data_url, pixels, visible_model

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo():
    demo = app.build_demo(visible_model())
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                **app.launch_options())
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def url(demo):
    return demo.local_url.rstrip("/")


# ---- gradio_client -----------------------------------------------------------------------------


def test_api_answers_with_an_image_and_a_probability(url):
    from gradio_client import Client

    client = Client(url, verbose=False)
    face, prob = client.predict(1.0, api_name="/slide_Eyeglasses")
    assert from_data_url(face).size == (16, 16)  # inline: no file to fetch
    assert "q(present)" in prob


def test_two_sessions_never_see_each_others_edits(url):
    from gradio_client import Client

    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    editor = app.Editor(visible_model())
    low, high, _ = editor.ranges[0]
    alice.predict(high, api_name="/slide_Eyeglasses")
    bob.predict(low, api_name="/slide_Eyeglasses")
    # Resample style returns the sliders of the caller's own session.
    alice_view = alice.predict(api_name="/resample_style")
    bob_view = bob.predict(api_name="/resample_style")
    assert alice_view[1] == high and bob_view[1] == low
    # A reset in one session leaves the other's edit in place.
    alice.predict(api_name="/reset")
    assert bob.predict(api_name="/resample_style")[1] == low


def live_move(url: str, data) -> tuple[int, dict | str]:
    """POST what app_assets/live_slider.js sends for a slider move: (status, answer)."""
    import json
    import urllib.error
    import urllib.request

    config = json.load(urllib.request.urlopen(url + "/config"))
    edited = next(c for c in config["components"] if c["props"].get("elem_id") == "edited")
    session_hash = data[0] if isinstance(data, list) and data and isinstance(data[0], str) else "x"
    body = json.dumps({"data": data, "component_id": edited["id"], "fn_name": "live_slide",
                       "session_hash": session_hash}).encode()
    request = urllib.request.Request(url + "/gradio_api/component_server", body,
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def test_live_move_shows_the_face_and_keeps_it_in_that_session_only(url):
    from gradio_client import Client

    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    editor = app.Editor(visible_model())
    low, high, _ = editor.ranges[0]
    face_low, _ = alice.predict(low, api_name="/slide_Eyeglasses")  # opens both sessions on the server
    bob.predict(low, api_name="/slide_Eyeglasses")
    status, answer = live_move(url, [alice.session_hash, 0, high])
    assert status == 200, answer
    assert from_data_url(answer["face"]).size == (16, 16) and answer["face"] != face_low
    assert "q(present)" in answer["prob"]
    # the move is in Alice's gr.State, as the slider's own event would have put it; Bob's is untouched
    assert alice.predict(api_name="/resample_style")[1] == high
    assert bob.predict(api_name="/resample_style")[1] == low
    # beyond the slider's range: shown at its end
    status, beyond = live_move(url, [alice.session_hash, 0, high + 100.0])
    status_end, at_end = live_move(url, [alice.session_hash, 0, high])
    assert status == status_end == 200 and beyond["face"] == at_end["face"]


@pytest.mark.parametrize("data, message", [
    ([None, 0, 1.0], "a live slider move needs the session hash, got None"),
    (["x", 99, 1.0], "label index must be an integer in [0, 3), got 99"),
    (["x", 0, "high"], "slider value must be a finite number, got 'high'"),
    ("junk", "a live slider move is [session hash, label index, value], got 'junk'"),
])
def test_a_bad_live_move_is_refused_and_the_server_keeps_serving(url, data, message):
    from gradio_client import Client

    status, answer = live_move(url, data)
    assert status == 200 and answer == {"error": message}
    assert "q(present)" in Client(url, verbose=False).predict(0.5, api_name="/slide_Eyeglasses")[1]


def test_a_live_move_of_an_unknown_or_expired_session_is_refused_with_a_message(url, demo):
    from gradio_client import Client

    client = Client(url, verbose=False)
    client.predict(0.5, api_name="/slide_Eyeglasses")
    status, answer = live_move(url, [client.session_hash, 0, 1.0])
    assert status == 200 and "face" in answer
    demo.sessions.pop(client.session_hash)  # as its lifetime ending would
    for key in (client.session_hash, "never-opened"):
        status, answer = live_move(url, [key, 0, 1.0])
        assert status == 200 and answer == {"error": f"session {key!r} is unknown or has expired: reload the page"}


def test_a_bad_upload_is_answered_and_the_server_keeps_serving(url, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(url, verbose=False)
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(AppError, match="not an image"):
        client.predict(handle_file(str(bad)), api_name="/upload")
    assert "q(present)" in client.predict(0.5, api_name="/slide_Eyeglasses")[1]


def test_sessions_rendering_the_same_image_at_once_all_get_it_whole(url):
    """Four sessions start from the same face, so their traversal strips are byte-identical;
    asked for at the same moment, each answer must be the complete PNG."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(4)]
    answers = []

    def render(client):
        for _ in range(10):
            answers.append(client.predict("Eyeglasses", api_name="/traversal"))

    threads = [threading.Thread(target=render, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 40 and len(set(answers)) == 1
    assert from_data_url(answers[0]).size == (8 * 16, 16)


# ---- a real browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(url):
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_page(page, url)
        yield page
        browser.close()


def open_page(page, url: str, label: str = "Eyeglasses") -> None:
    """Load the app and wait for its load event (which opens the page's session for the live slider)."""
    page.goto(url)
    page.wait_for_selector(f"#slider-{label} input[type=range]")
    page.wait_for_function("window.ccvae && window.ccvae.session")


def image_src(page, elem_id: str) -> str:
    return page.eval_on_selector(f"#{elem_id} img", "img => img.getAttribute('src')")


def wait_for_new_src(page, elem_id: str, old: str, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        src = image_src(page, elem_id)
        if src != old:
            page.wait_for_function(
                f"document.querySelector('#{elem_id} img').complete", timeout=timeout_s * 1000
            )
            return src
        time.sleep(0.05)
    raise AssertionError(f"#{elem_id} still shows {old} after {timeout_s} s")


def move_slider(page, label: str, to: str) -> None:
    page.eval_on_selector(
        f"#slider-{label} input[type=range]",
        f"e => {{ e.value = e.{to}; e.dispatchEvent(new Event('input', {{bubbles: true}})); }}",
    )


def test_browser_page_session_is_opened_on_load_kept_apart_and_dropped_on_close(page, url, demo):
    """Each page's edits live under its own session hash from its load event; a second page's
    live moves never show in the first, and closing a page drops its session (demo.unload)."""
    key = page.evaluate("window.ccvae.session")
    assert demo.sessions.get(key) is not None
    other = page.context.browser.new_page()
    open_page(other, url)
    other_key = other.evaluate("window.ccvae.session")
    assert other_key != key and demo.sessions.get(other_key) is not None
    before = image_src(page, "edited")
    old = image_src(other, "edited")
    move_slider(other, "Eyeglasses", "min")
    wait_for_new_src(other, "edited", old)
    assert image_src(page, "edited") == before
    other.close()
    deadline = time.monotonic() + 10
    while demo.sessions.get(other_key) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert demo.sessions.get(other_key) is None and demo.sessions.get(key) is not None


def test_browser_shows_why_a_live_move_was_refused(page, url, demo):
    """A page whose session has expired (here: dropped) says so under the face instead of failing quietly."""
    expired = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_page(expired, url)
        demo.sessions.pop(expired.evaluate("window.ccvae.session"))
        move_slider(expired, "Smiling", "max")
        expired.wait_for_selector("#edited .notice", timeout=10_000)
        assert "reload the page" in expired.inner_text("#edited .notice")
    finally:
        expired.close()


def test_browser_slider_and_resample_change_the_face(page):
    before = image_src(page, "edited")
    prob_before = page.inner_text("#prob-Eyeglasses")
    move_slider(page, "Eyeglasses", "max")
    after_slide = wait_for_new_src(page, "edited", before)
    page.wait_for_function(
        "old => document.querySelector('#prob-Eyeglasses').innerText !== old", arg=prob_before
    )
    slider_before = page.input_value("#slider-Eyeglasses input[type=range]")
    page.click("#resample-Eyeglasses")
    wait_for_new_src(page, "edited", after_slide)
    page.wait_for_function(
        "old => document.querySelector('#slider-Eyeglasses input[type=range]').value !== old",
        arg=slider_before,
    )
    assert page.locator(".toast-body").count() == 0  # no error toast


def test_browser_drag_ends_on_the_face_of_the_last_position(page, url):
    """A real mouse drag (many input events, then the release), then arrow keys (input events
    only): the face and q(y|z) shown at the end are those of the slider's final value, as the
    API gives them for a fresh session (the page only ever moved this slider)."""
    import re

    from gradio_client import Client

    fresh = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_page(fresh, url)
        slider = "#slider-Eyeglasses input[type=range]"
        box = fresh.locator(slider).bounding_box()
        y = box["y"] + box["height"] / 2
        fresh.mouse.move(box["x"] + 2, y)
        fresh.mouse.down()
        for k in range(1, 25):
            fresh.mouse.move(box["x"] + box["width"] * 0.8 * k / 24, y)
        fresh.mouse.up()
        value = float(fresh.input_value(slider))
        face, prob = Client(url, verbose=False).predict(value, api_name="/slide_Eyeglasses")
        fresh.wait_for_function("src => document.querySelector('#edited img').getAttribute('src') === src",
                                arg=face, timeout=10_000)
        number = re.search(r"q\(present\) = ([0-9.]+)", fresh.inner_text("#prob-Eyeglasses")).group(1)
        assert f"<b>{number}</b>" in prob
        # Keys fire input events and no release: the live path alone must end on the last value.
        fresh.focus(slider)
        for _ in range(12):
            fresh.keyboard.press("ArrowLeft")
        value = float(fresh.input_value(slider))
        face, _ = Client(url, verbose=False).predict(value, api_name="/slide_Eyeglasses")
        fresh.wait_for_function("src => document.querySelector('#edited img').getAttribute('src') === src",
                                arg=face, timeout=10_000)
    finally:
        fresh.close()


def test_browser_downloads_the_edited_face(page, tmp_path):
    shown = from_data_url(image_src(page, "edited"))
    with page.expect_download() as download:
        page.click("#edited a[download]")
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.suffix == ".png"
    assert np.array_equal(np.asarray(images.open_image(path)), np.asarray(shown))


LAPTOP, PHONE = {"width": 1366, "height": 768}, {"width": 390, "height": 844}
FIFTEEN = [f"Label_{k}" for k in range(15)]  # as many labels as the bundled model

# The edited face's box, and the sliders wholly on screen and not under the face (on a phone the
# face stays at the top of the screen, over the rows scrolling beneath it).
ON_SCREEN_JS = """() => {
  const face = document.querySelector('#edited .face img.now').getBoundingClientRect();
  const sliders = [...document.querySelectorAll('.label-slider input[type=range]')].filter((range) => {
    const box = range.getBoundingClientRect();
    const under = box.left < face.right && box.right > face.left && box.top < face.bottom && box.bottom > face.top;
    return box.height > 0 && box.top >= 0 && box.bottom <= innerHeight && !under;
  });
  return {face: [face.top, face.bottom, face.left, face.right], sliders: sliders.length,
          overflow: document.documentElement.scrollWidth - innerWidth};
}"""


@pytest.fixture(scope="module")
def fifteen_labels(page):
    """A page with 15 labels, as the bundled model has: (its URL, the browser)."""
    from ccvae import CCVAE

    model = CCVAE(label_names=FIFTEEN, latent_dim=17, image_size=16, channels=[8, 8], hidden_dim=16)
    with torch_no_grad():
        for p in model.decoder.parameters():
            p.mul_(2.5)
    demo = app.build_demo(model.eval())
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                **app.launch_options())
    yield demo.local_url, page.context.browser
    demo.close()


def torch_no_grad():
    import torch

    return torch.no_grad()


def face_in_view(shown: dict, viewport: dict) -> bool:
    top, bottom, left, right = shown["face"]
    return 0 <= top < bottom <= viewport["height"] and 0 <= left < right <= viewport["width"]


@pytest.mark.parametrize("viewport, least", [(LAPTOP, 8), (PHONE, 1)], ids=["laptop", "phone"])
def test_browser_shows_the_face_and_the_rows_on_the_first_screen_and_keeps_the_face_in_view(
        fifteen_labels, viewport, least):
    """On the first screen: the whole edited face and at least 8 label rows on a laptop, at least
    one on a phone; nothing wider than the screen. Scrolled to any slider and moved with the
    keys, the whole face stays in view (its column is sticky; on a phone the face alone, smaller,
    stays at the top) and the slider is not under it."""
    url, browser = fifteen_labels
    page = browser.new_page(viewport=viewport)
    try:
        open_page(page, url, "Label_0")
        shown = page.evaluate(ON_SCREEN_JS)
        assert face_in_view(shown, viewport) and shown["sliders"] >= least and shown["overflow"] <= 0, shown
        # a label's row holds its slider, its probability and its three buttons
        row = page.locator(".label-row").first.bounding_box()
        for part in ("#slider-Label_0 input[type=range]", "#prob-Label_0", "#resample-Label_0", "#add-Label_0",
                     "#remove-Label_0"):
            box = page.locator(part).bounding_box()
            assert row["y"] <= box["y"] and box["y"] + box["height"] <= row["y"] + row["height"] + 1, (part, box, row)
        for label in ("Label_7", "Label_14"):
            slider = f"#slider-{label} input[type=range]"
            page.locator(slider).scroll_into_view_if_needed()
            old = image_src(page, "edited")
            page.focus(slider)
            for _ in range(10):
                page.keyboard.press("ArrowRight")
            wait_for_new_src(page, "edited", old)
            shown = page.evaluate(ON_SCREEN_JS)
            box = page.locator(slider).bounding_box()
            assert face_in_view(shown, viewport) and shown["overflow"] <= 0, (label, shown)
            assert 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"], (label, box)
            face_top, face_bottom, face_left, face_right = shown["face"]
            beside = box["x"] >= face_right or box["x"] + box["width"] <= face_left
            assert beside or box["y"] >= face_bottom, (label, box, shown)
    finally:
        page.close()


def test_browser_undo_and_redo_restore_the_faces_pixels_and_the_start_can_be_held_up(fifteen_labels):
    """Keys move a slider (one undo step), a Resample button edits again; Ctrl+Z twice restores
    the first face pixel for pixel and the slider's position, Ctrl+Shift+Z brings the move back;
    holding "Hold to compare" shows the face the edit started from (the reconstruction)."""
    from gradio_client import Client

    url, browser = fifteen_labels
    page = browser.new_page(viewport=LAPTOP)
    try:
        open_page(page, url, "Label_0")
        slider = "#slider-Label_3 input[type=range]"
        first, first_value = image_src(page, "edited"), page.input_value(slider)
        page.focus(slider)
        for _ in range(15):
            page.keyboard.press("ArrowRight")
        moved_value = page.input_value(slider)
        # the face of the last position (the keys' live moves arrive one after another): as the API
        # shows it to a new session, which starts from the same face
        moved = Client(url, verbose=False).predict(float(moved_value), api_name="/slide_Label_3")[0]
        page.wait_for_function("src => document.querySelector('#edited img').getAttribute('src') === src",
                               arg=moved, timeout=10_000)
        page.click("#add-Label_5")
        added = wait_for_new_src(page, "edited", moved)
        faces = [pixels(face) for face in (first, moved, added)]  # two edits to take back, each seen
        assert not any(np.array_equal(faces[a], faces[b]) for a, b in ((0, 1), (1, 2), (0, 2)))
        page.focus(slider)
        page.keyboard.press("Control+z")
        assert np.array_equal(pixels(wait_for_new_src(page, "edited", added)), pixels(moved))
        page.keyboard.press("Control+z")
        assert np.array_equal(pixels(wait_for_new_src(page, "edited", moved)), pixels(first))
        page.wait_for_function(f"v => document.querySelector('{slider}').value === v", arg=first_value)
        page.keyboard.press("Control+Shift+z")
        assert np.array_equal(pixels(wait_for_new_src(page, "edited", first)), pixels(moved))
        page.wait_for_function(f"v => document.querySelector('{slider}').value === v", arg=moved_value)
        page.click("#undo")
        wait_for_new_src(page, "edited", moved)
        page.click("#redo")
        wait_for_new_src(page, "edited", first)
        # hold to compare: the face the edit started from, then the edited face again
        visible = "() => [...document.querySelectorAll('#edited .face img')].filter(i => i.offsetWidth > 0)" \
                  ".map(i => i.getAttribute('src'))"
        assert page.evaluate(visible) == [moved]
        page.hover("#edited .compare")
        page.mouse.down()
        try:
            assert page.evaluate(visible) == [image_src(page, "reconstruction")]
        finally:
            page.mouse.up()
        assert page.evaluate(visible) == [moved]
        # a new face becomes the one to compare with
        page.click("#random-face")
        wait_for_new_src(page, "reconstruction", first)
        page.wait_for_function("() => document.querySelector('#edited img.start').getAttribute('src') === "
                               "document.querySelector('#reconstruction img').getAttribute('src')")
    finally:
        page.close()


def test_browser_tab_reaches_every_slider_and_every_control_is_named_with_its_label(fifteen_labels):
    import re

    url, browser = fifteen_labels
    page = browser.new_page(viewport=LAPTOP)
    try:
        open_page(page, url, "Label_0")
        shown = [app.words(label) for label in FIFTEEN]  # "Label 0"
        for label in shown:
            assert page.get_by_role("slider", name=f"range slider for {label}", exact=True).count() == 1
            for verb in ("Resample", "Add", "Remove"):
                # (the name may begin with the icon page.css draws before it)
                named = page.get_by_role("button", name=re.compile(rf"{verb} {label}$"))
                assert named.count() == 1, (verb, label)
        reached = []
        for _ in range(400):
            page.keyboard.press("Tab")
            name = page.evaluate("document.activeElement.getAttribute('aria-label')")
            if name and name.startswith("range slider for "):
                reached.append(name.removeprefix("range slider for "))
            if reached[-1:] == shown[-1:]:
                break
        assert reached == shown
        for verb, tip in (("resample", "Resample: "), ("add", "Add: "), ("remove", "Remove: ")):
            page.hover(f"#{verb}-Label_2")  # each small button's tooltip
            content = page.eval_on_selector(f"#{verb}-Label_2", "b => getComputedStyle(b, '::after').content")
            assert content.startswith(f'"{tip}'), (verb, content)
        page.focus(f"#slider-Label_{len(FIFTEEN) - 1} input[type=range]")
        old = image_src(page, "edited")  # the arrows move the slider Tab reached, and redraw the face
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        wait_for_new_src(page, "edited", old)
    finally:
        page.close()


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_browser_axe_core_finds_no_serious_or_critical_violation(fifteen_labels, viewport):
    from axe_playwright_python.sync_playwright import Axe

    url, browser = fifteen_labels
    page = browser.new_page(viewport=viewport)
    try:
        open_page(page, url, "Label_0")
        page.click("text=More: traversals, grids and swapping")  # its contents too
        page.wait_for_selector("text=Swap it in from the second face")
        violations = Axe().run(page).response["violations"]
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]]) for v in violations
               if v["impact"] in ("serious", "critical")]
        assert not bad, bad
    finally:
        page.close()


def test_browser_upload_shows_the_photo_and_its_reconstruction(page, tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "me.jpg"
    Image.fromarray((rng.random((120, 90, 3)) * 255).astype(np.uint8)).save(path)
    old_input, old_reconstruction = image_src(page, "input"), image_src(page, "reconstruction")
    with page.expect_file_chooser() as chooser:
        page.click("#upload")
    chooser.value.set_files(str(path))
    wait_for_new_src(page, "input", old_input)
    wait_for_new_src(page, "reconstruction", old_reconstruction)
    shown = page.eval_on_selector("#edited img", "img => img.getBoundingClientRect().width")
    assert shown >= 256  # the 16 px face is enlarged in the page


def test_browser_bad_upload_shows_a_message(page, tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with page.expect_file_chooser() as chooser:
        page.click("#upload")
    chooser.value.set_files(str(path))
    page.wait_for_selector("text=cannot be decoded", timeout=10_000)  # the message, in a toast


def test_live_move_works_when_mounted_in_another_fastapi_app():
    """Mounted in another FastAPI app (gr.mount_gradio_app), the live path still finds the session."""
    import fastapi
    import gradio as gr
    import uvicorn
    from gradio_client import Client

    demo = app.build_demo(visible_model())
    server_app = gr.mount_gradio_app(fastapi.FastAPI(), demo, path="/editor")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(server_app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}/editor"
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        client = Client(url, verbose=False)
        low, high, _ = app.Editor(visible_model()).ranges[0]
        client.predict(low, api_name="/slide_Eyeglasses")
        status, answer = live_move(url, [client.session_hash, 0, high])
        assert status == 200 and "face" in answer, answer
        assert client.predict(api_name="/resample_style")[1] == high
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ---- the benchmark -------------------------------------------------------------------------


def test_bench_app_reports_every_figure_on_a_tiny_model(capsys):
    """python -m train.bench_app end to end, small: the live path and the Gradio event under load
    (every face checked against its own session's) and the memory run; the browser run is
    exercised by the browser tests above."""
    from train import bench_app

    results = bench_app.main(bench_app.parse_args(["--tiny", "--moves", "3", "--sessions", "2", "--memory-sessions",
                                                   "4", "--session-ttl", "1", "--skip", "browser"]))
    out = capsys.readouterr().out
    paths = ("live HTTP", "Gradio event (gradio_client, ssl_verify=False)", "Gradio event (gradio_client defaults)")
    for name in [f"2 sessions x 3 moves, {path}: p95 ms" for path in paths] + [
            "resident MB after 4 sessions and their 1 s lifetime"]:
        assert results[name] > 0 and name in out
    for path in paths:
        assert results[f"2 sessions x 3 moves, {path}: faces not the session's own"] == 0


def test_bench_app_names_a_bad_count():
    from train import bench_app

    with pytest.raises(SystemExit):
        bench_app.parse_args(["--tiny", "--sessions", "0"])
