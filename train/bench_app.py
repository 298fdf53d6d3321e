"""The app's three service figures, measured on a running ``app.py``.

    python -m train.bench_app --checkpoint checkpoints/synthetic-faces
    python -m train.bench_app --tiny            # a random 64x64 model, before any is trained

1. **One user in a real browser**: Debian's Chromium (Playwright) moves a slider; each move is
   timed inside the page from the range input's ``input`` event to the new ``<img>`` decoded
   (``img.decode()``), i.e. ready to paint. p50 / p95 over ``--moves`` moves.
2. **Server capacity without browsers**: ``--sessions`` sessions at once, each opened with a
   random face (``/random_face``, whose seed the status line reports), then sending ``--moves``
   live slider moves back to back over the page's own HTTP path (the edited face's server
   function ``live_slide``: one POST to ``/component_server``); p50 / p95 from request sent to
   answer read. Every answer is checked against the face its own session should show (the
   seed's random face with that slider set, decoded here), so a session shown another's face
   fails the run. Then the same load through the slider's Gradio event (``/slide_<label>``,
   gradio_client), checked the same way: once with ``ssl_verify=False`` (the URL is plain HTTP,
   so nothing is verified either way), once with the client's defaults, under which every call
   builds two HTTP clients that each load the CA bundle, tens of ms of the clients' own CPU on
   the cores the server shares with them.
3. **Memory**: a fresh ``app.py`` with ``--session-ttl``; its resident memory before and after
   ``--memory-sessions`` short gradio_client sessions (a random face and 3 slider moves each),
   and again once that lifetime has passed (one more request lets the app drop what expired).

The server is a subprocess on this machine's cores, shared with the browser and the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
TINY_LABELS = ["Eyeglasses", "Smiling", "Male"]

# Moves one after another: set the range input, fire `input`, resolve with the ms until the
# new image is decoded, for each value.
MOVES_JS = """
async ([selector, values, timeoutMs]) => {
  const root = document.querySelector('#edited');
  const range = document.querySelector(selector);
  const times = [];
  for (const value of values) {
    const old = root.querySelector('img')?.getAttribute('src');
    times.push(await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { observer.disconnect(); reject(new Error('no new image')); }, timeoutMs);
      const settle = (tries) => root.querySelector('img').decode().then(
        () => resolve(performance.now() - t0),
        (e) => tries > 0 ? setTimeout(() => settle(tries - 1), 1) : reject(e));  // src changed meanwhile
      const observer = new MutationObserver(() => {
        const img = root.querySelector('img');
        if (!img || img.getAttribute('src') === old) return;
        observer.disconnect();
        clearTimeout(timer);
        settle(20);
      });
      observer.observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
      const t0 = performance.now();
      range.value = value;
      range.dispatchEvent(new Event('input', {bubbles: true}));
    }));
  }
  return times;
}
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="model folder or Hub id passed to app.py")
    source.add_argument("--tiny", action="store_true", help="a random 64x64 model (3 labels, 45 latents)")
    parser.add_argument("--label", default=None, help="slider to move (default: the first label)")
    parser.add_argument("--moves", type=int, default=50, help="slider moves per user")
    parser.add_argument("--sessions", type=int, default=16, help="concurrent sessions in the capacity run")
    parser.add_argument("--memory-sessions", type=int, default=1000, help="short sessions in the memory run")
    parser.add_argument("--session-ttl", type=float, default=30.0,
                        help="the app's --session-ttl in the memory run, seconds (the app's default is an hour)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["browser", "capacity", "memory"])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer")
    args = parser.parse_args(argv)
    for name in ("moves", "sessions", "memory_sessions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def make_tiny_checkpoint(directory: Path) -> Path:
    """A random model at the bundled model's size; its decoder is amplified so that every
    slider position changes the pixels (an untrained decoder barely reacts to z)."""
    import torch

    from ccvae import CCVAE

    torch.manual_seed(0)
    model = CCVAE(label_names=TINY_LABELS, latent_dim=45, image_size=64)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(2.5)
    model.save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(checkpoint: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """``python app.py --checkpoint ...`` on a free port: (process, its URL ending in /)."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--checkpoint", checkpoint, *extra],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with code {process.returncode} before serving")
        try:
            urllib.request.urlopen(url, timeout=1)
            return process, url
        except OSError:
            time.sleep(0.25)
    process.terminate()
    raise RuntimeError(f"app.py did not answer at {url} within 180 s")


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def resident_mb(pid: int) -> float:
    """The process's resident memory (VmRSS, Linux), MB."""
    kb = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)
    return int(kb) / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def slider_positions(low: float, high: float, step: float, moves: int, user: int) -> list[float]:
    """Golden-ratio steps over the range: every move lands on a new value, so every image is
    new; users start at different points of the sequence."""
    count = round((high - low) / step)
    start = 1 + user * moves
    return [round(low + step * round(count * (k * 0.618034 % 1.0)), 6) for k in range(start, start + moves)]


def page_config(url: str, label: str) -> dict:
    """What the page knows of ``label``'s slider and the live path, from the app's /config."""
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        config = json.load(response)
    edited = next((c for c in config["components"] if c["props"].get("elem_id") == "edited"), None)
    if edited is None or "live_slide" not in edited["props"].get("server_fns", []):
        raise ValueError("the app has no #edited face with the live_slide server function (app_assets/live_slider.js)")
    slider = next((c["props"] for c in config["components"] if c["props"].get("elem_id") == f"slider-{label}"), None)
    if slider is None:
        raise ValueError(f"the app has no slider for {label!r}; is --label a label of the model?")
    return {"live_path": f"{config.get('api_prefix', '')}/component_server", "component_id": edited["id"],
            "label_index": json.loads(edited["props"]["props"]["labels"]).index(label),
            "range": (slider["minimum"], slider["maximum"], slider["step"])}


class Expected:
    """The faces each session should be shown, decoded here from the seeds the app reports."""

    def __init__(self, checkpoint: str, label: str):
        import torch

        import app

        torch.set_num_threads(1)
        model = app.CCVAE.from_pretrained(checkpoint).eval()
        self.editor = app.Editor(model, examples=[app.Image.new("RGB", (model.image_size,) * 2)])
        self.index = [app.slug(name) for name in self.editor.labels].index(label)

    def pixels(self, seed: int, values: list[float]) -> list:
        """The faces a session on random face ``seed`` is shown as its slider takes ``values`` in
        turn (each move edits the last: one that sets the label present may clear exclusive ones)."""
        import numpy as np

        from ccvae import editing, images

        z, faces = self.editor.random_face(seed=seed)[-1].z, []
        for value in values:
            z = editing.intervene(self.editor.model, z, self.index, value)
            faces.append(np.asarray(images.to_pil(editing.decode(self.editor.model, z)[0])).astype(int))
        return faces


def shown_pixels(data_url: str):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.partition(",")[2]))).convert("RGB")).astype(int)


def open_session(url: str, *, ssl_verify: bool = True) -> tuple[object, int]:
    """A gradio_client session on a random face: (client, the face's seed)."""
    from gradio_client import Client

    client = Client(url, verbose=False, ssl_verify=ssl_verify)
    status = client.predict(api_name="/random_face")[-1]
    return client, int(re.search(r"seed (\d+)", status).group(1))


def live_session(url: str, page: dict, client, values: list[float], barrier: threading.Barrier,
                 timeout_s: float) -> list[tuple[float, float, str]]:
    """One session's live moves, back to back on one connection: [(ms, value, face)]."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    answers = []
    barrier.wait()
    for value in values:
        body = json.dumps({"data": [client.session_hash, page["label_index"], value], "fn_name": "live_slide",
                           "component_id": page["component_id"], "session_hash": client.session_hash})
        start = time.perf_counter()
        connection.request("POST", page["live_path"], body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        ms = 1000 * (time.perf_counter() - start)
        face = json.loads(answer).get("face") if response.status == 200 else None
        if face is None:
            raise RuntimeError(f"live move answered {response.status}: {answer[:200]!r}")
        answers.append((ms, value, face))
    connection.close()
    return answers


def api_session(client, label: str, values: list[float], barrier: threading.Barrier) -> list[tuple[float, float, str]]:
    """One session's moves through the slider's Gradio event (gradio_client): [(ms, value, face)]."""
    answers = []
    barrier.wait()
    for value in values:
        start = time.perf_counter()
        out = client.predict(value, api_name=f"/slide_{label}")
        answers.append((1000 * (time.perf_counter() - start), value, out[0]))
    return answers


def capacity(url: str, label: str, args: argparse.Namespace, expected: Expected) -> dict[str, float]:
    """Sessions moving at once over the live path, then through the Gradio event."""
    page = page_config(url, label)
    results = {}
    runs = (("live HTTP", "live", True), ("Gradio event (gradio_client, ssl_verify=False)", "api", False),
            ("Gradio event (gradio_client defaults)", "api", True))
    for name, run, ssl_verify in runs:
        with ThreadPoolExecutor(args.sessions) as pool:
            opened = list(pool.map(lambda _: open_session(url, ssl_verify=ssl_verify), range(args.sessions)))
            barrier = threading.Barrier(args.sessions)
            jobs = []
            for k, (client, _) in enumerate(opened):
                values = slider_positions(*page["range"], args.moves, k + 1)
                if run == "live":
                    jobs.append(pool.submit(live_session, url, page, client, values, barrier, args.timeout))
                else:
                    jobs.append(pool.submit(api_session, client, label, values, barrier))
            per_session = [job.result() for job in jobs]
        times = [ms for answers in per_session for ms, _, _ in answers]
        # every face shown is the one its own session should show (a decode in another batch
        # differs by float rounding, a pixel level at most; another session's face by far more)
        wrong = sum(int(abs(shown_pixels(face) - want).max() > 2)
                    for (_, seed), answers in zip(opened, per_session)
                    for (_, _, face), want in zip(answers, expected.pixels(seed, [value for _, value, _ in answers])))
        results[f"{args.sessions} sessions x {args.moves} moves, {name}: p50 ms"] = statistics.median(times)
        results[f"{args.sessions} sessions x {args.moves} moves, {name}: p95 ms"] = percentile(times, 0.95)
        results[f"{args.sessions} sessions x {args.moves} moves, {name}: faces not the session's own"] = wrong
        for client, _ in opened:
            client.close()
    return results


async def browser_latency(url: str, label: str, args: argparse.Namespace) -> dict[str, float]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1366, "height": 768})
        await page.goto(url, timeout=120_000)
        selector = f"#slider-{label} input[type=range]"
        await page.wait_for_selector(selector, timeout=120_000)
        await page.wait_for_function("window.ccvae && window.ccvae.session", timeout=120_000)
        low, high, step = [float(await page.get_attribute(selector, key)) for key in ("min", "max", "step")]
        await page.evaluate(MOVES_JS, [selector, [repr(v) for v in slider_positions(low, high, step, 5, 0)],
                                       args.timeout * 1000])  # warm-up
        values = slider_positions(low, high, step, args.moves, 1)
        times = await page.evaluate(MOVES_JS, [selector, [repr(v) for v in values], args.timeout * 1000])
        await browser.close()
    return {f"1 user in Chromium, {args.moves} moves: p50 ms": statistics.median(times),
            f"1 user in Chromium, {args.moves} moves: p95 ms": percentile(times, 0.95)}


def memory(checkpoint: str, label: str, args: argparse.Namespace) -> dict[str, float]:
    """A fresh app's resident memory around ``--memory-sessions`` short sessions and their lifetime."""
    process, url = start_app(checkpoint, "--session-ttl", str(args.session_ttl))
    try:
        low, high, step = page_config(url, label)["range"]

        def short_session(k: int) -> None:
            client, _ = open_session(url)
            for value in slider_positions(low, high, step, 3, k):
                client.predict(value, api_name=f"/slide_{label}")
            client.close()

        for k in range(3):  # warm-up: what the first sessions load stays loaded
            short_session(k)
        before = resident_mb(process.pid)
        start, done, growth = time.monotonic(), 0, {}
        with ThreadPoolExecutor(4) as pool:
            for quarter in range(1, 5):
                upto = args.memory_sessions * quarter // 4
                list(pool.map(short_session, range(done, upto)))
                done = upto
                growth[f"resident MB after {done} sessions"] = resident_mb(process.pid)
        time.sleep(max(0.0, args.session_ttl - (time.monotonic() - start)) + args.session_ttl + 5)
        short_session(0)  # a request after the lifetime: the app drops the sessions that expired
        time.sleep(2)
        expired = resident_mb(process.pid)
    finally:
        stop_app(process)
    n = args.memory_sessions
    return {"resident MB before the sessions": before, **growth,
            f"resident MB after {n} sessions and their {args.session_ttl:g} s lifetime": expired,
            "resident MB kept (after the lifetime - before)": expired - before}


def main(args: argparse.Namespace) -> dict[str, float]:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(make_tiny_checkpoint(Path(tmp) / "tiny")) if args.tiny else args.checkpoint
        from ccvae import CCVAE

        import app

        label = app.slug(args.label or CCVAE.from_pretrained(checkpoint).label_names[0])
        if {"browser", "capacity"} - set(args.skip):
            process, url = start_app(checkpoint)
            try:
                if "browser" not in args.skip:
                    results.update(asyncio.run(browser_latency(url, label, args)))
                if "capacity" not in args.skip:
                    results.update(capacity(url, label, args, Expected(checkpoint, label)))
            finally:
                stop_app(process)
        if "memory" not in args.skip:
            results.update(memory(checkpoint, label, args))
    print(f"app.py, checkpoint {'random 64x64 (--tiny)' if args.tiny else args.checkpoint}, slider {label}, "
          f"{os.cpu_count()} CPUs shared by the server, the browser and the clients")
    for name, value in results.items():
        print(f"  {name}: {value:.1f}")
    return results


if __name__ == "__main__":
    main(parse_args())
