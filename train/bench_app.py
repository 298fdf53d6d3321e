"""Slider latency of the app in a real browser: slider input -> new face decoded on screen.

    python -m train.bench_app --checkpoint checkpoints/synthetic-faces
    python -m train.bench_app --tiny            # a random 64x64 model, before any is trained

Starts ``python app.py --checkpoint DIR`` in a subprocess, drives Debian's Chromium with
Playwright, and for each move times, inside the page, from the range input's ``input``
event to the new ``<img>`` being decoded (``img.decode()``), i.e. ready to paint.
Reports p50/p95 over ``--moves`` moves with one user, then p95 with ``--sessions``
browser contexts (separate Gradio sessions) moving their sliders at the same time.
Browser and server share the machine, as they would for a person trying it locally.
One headless Chromium holds every session, and each page runs its whole sequence of
moves in one call, each move starting when the previous image is shown (a user dragging
the slider), so the measuring side adds no work per move beyond the page's own.

Real users' browsers run on their own machines; here every page's own work shares the
server's cores. A Gradio 6.31 event costs a page tens of CPU ms per update, so slider moves
take the app's live path (``app.LIVE_SLIDER_JS``: one POST to a server function of the edited
face, shown through the components' props), and the frame loop Gradio's loading screen leaves
running on every open page is stopped (``app.STOP_LOADER_LOOP_JS``); the idle figure printed
below shows what open pages still cost. ``--pages K`` keeps the server's load at
``--sessions`` sessions while only K of them are Chromium pages: the others are sessions
without a page that send the page's live-move request (same endpoint, body and session
handling) one after another, with no page work in between, i.e. more requests per second
than a person at a page makes. Latencies are reported for the pages (in-page, as above) and,
apart, for the page-less sessions (request sent -> response read).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import secrets
import socket
import threading
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
TINY_LABELS = ["Eyeglasses", "Smiling", "Male"]

# Moves one after another: set the range input, fire `input`, take the ms until the new image
# is decoded; resolve with the list of [ms, ms until the server's answer had arrived or null].
MOVES_JS = """
async ([sliderSelector, values, timeoutMs]) => {
  const times = [];
  for (const value of values) times.push(await move(sliderSelector, value, timeoutMs));
  return times;
}
"""
MOVE_JS = """
async function move(sliderSelector, value, timeoutMs) {
  const root = document.querySelector('#edited');
  const old = root.querySelector('img')?.getAttribute('src');
  const range = document.querySelector(sliderSelector);
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { observer.disconnect(); reject(new Error('no new image')); }, timeoutMs);
    const check = () => {
      const img = root.querySelector('img');
      if (!img || img.getAttribute('src') === old) return;
      observer.disconnect();
      clearTimeout(timer);
      // decode() rejects if the element's src changes meanwhile; retry on the current one.
      const settle = (tries) => {
        const current = root.querySelector('img');
        current.decode().then(() => resolve([performance.now() - t0, answered()]),
                              (e) => tries > 0 ? setTimeout(() => settle(tries - 1), 1) : reject(e));
      };
      settle(20);
    };
    // When the event's direct (unqueued) POST had its response: the rest is the page's own work.
    const answered = () => {
      const posts = performance.getEntriesByType('resource')
        .filter((e) => (e.name.includes('/run/predict') || e.name.includes('/component_server')) && e.startTime >= t0);
      return posts.length ? Math.max(...posts.map((e) => e.responseEnd)) - t0 : null;
    };
    const observer = new MutationObserver(check);
    observer.observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
    performance.clearResourceTimings();  // the buffer keeps only the first 250 entries
    const t0 = performance.now();
    range.value = value;
    range.dispatchEvent(new Event('input', {bubbles: true}));
  });
}
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="model folder or Hub id passed to app.py")
    source.add_argument("--tiny", action="store_true", help="a random 64x64 model (3 labels, 45 latents)")
    parser.add_argument("--label", default=None, help="slider to move (default: the first label)")
    parser.add_argument("--moves", type=int, default=50, help="moves per user")
    parser.add_argument("--sessions", type=int, default=16, help="concurrent users in the second run")
    parser.add_argument("--pages", type=int, default=None,
                        help="how many of the sessions are Chromium pages (default: all); the others send "
                             "the page's slider request without a page, back to back")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for one image")
    parser.add_argument("--idle-seconds", type=float, default=3.0,
                        help="how long to measure the CPU used by the open pages before they move")
    args = parser.parse_args(argv)
    if args.pages is not None and not 1 <= args.pages <= args.sessions:
        parser.error(f"--pages must be between 1 and --sessions ({args.sessions}), got {args.pages}")
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
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def start_app(checkpoint: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--checkpoint", checkpoint],
                               cwd=REPO, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with code {process.returncode} before serving")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return process
        except OSError:
            time.sleep(0.25)
    process.terminate()
    raise RuntimeError(f"app.py did not answer on port {port} within 120 s")


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by process ``pid``, or by the whole machine (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / ticks


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def process_kind(pid: int, app_pid: int) -> str:
    """'app.py', a Chromium process type ('renderer', 'gpu-process', 'browser', ...), or 'driver'."""
    if pid == app_pid:
        return "app.py"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return "gone"
    if b"chrom" not in command.split(b" ", 1)[0]:
        return "driver"  # this script and Playwright's node process
    kind = re.search(rb"--type=([a-z-]+)", command)  # Chromium rewrites its argv: search the text
    return kind.group(1).decode() if kind else "browser"


def cpu_by_kind(app_pid: int) -> dict[tuple[int, str], float]:
    """CPU seconds so far of every process this script started, keyed by (pid, kind)."""
    usage = {}
    for pid in process_tree(os.getpid()):
        try:
            usage[(pid, process_kind(pid, app_pid))] = cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            pass  # exited meanwhile
    return usage


def cpu_used(before: dict[tuple[int, str], float], after: dict[tuple[int, str], float]) -> dict[str, float]:
    """CPU seconds used between two :func:`cpu_by_kind` snapshots, summed by kind."""
    used: dict[str, float] = {}
    for (pid, kind), seconds in after.items():
        used[kind] = used.get(kind, 0.0) + seconds - before.get((pid, kind), 0.0)
    return used


def describe_cpu(used: dict[str, float], seconds: float) -> str:
    """'app.py 0.41, renderer 1.02, ...' in cores (CPU seconds per second), largest first."""
    cores = sorted(((v / seconds, k) for k, v in used.items() if v > 0), reverse=True)
    return ", ".join(f"{kind} {value:.2f}" for value, kind in cores)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


async def open_user(browser, url: str, label: str):
    """A fresh browser context (its own Gradio session) with the page loaded."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    await page.goto(url, timeout=120_000)
    await page.wait_for_selector(f"#slider-{label} input[type=range]", timeout=120_000)
    await page.add_script_tag(content=MOVE_JS)
    return context, page


async def move(page, label: str, moves: int, timeout_s: float, user: int = 0) -> list[list[float | None]]:
    selector = f"#slider-{label} input[type=range]"
    low = float(await page.get_attribute(selector, "min"))
    high = float(await page.get_attribute(selector, "max"))
    step = float(await page.get_attribute(selector, "step"))
    positions = slider_positions(low, high, step, moves, user)
    return await page.evaluate(MOVES_JS, [selector, [repr(v) for v in positions], timeout_s * 1000])


def slider_positions(low: float, high: float, step: float, moves: int, user: int) -> list[float]:
    """Golden-ratio steps over the range: every move lands on a new value, so every image is
    new; users start at different points of the sequence, so sessions show different faces."""
    count = round((high - low) / step)
    start = 1 + user * moves
    return [round(low + step * round(count * (k * 0.618034 % 1.0)), 6) for k in range(start, start + moves)]


def slide_endpoint(url: str, label: str) -> dict:
    """What the page POSTs for a move of ``label``'s slider, read from the app's /config: the
    live move (app.LIVE_SLIDER_JS, a server function of the edited face) and the slider's
    Gradio event (sent at the end of a drag; it also opens the session on the server)."""
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        config = json.load(response)
    prefix = config.get("api_prefix", "")
    edited = next((c for c in config["components"] if c["props"].get("elem_id") == "edited"), None)
    if edited is None or "live_slide" not in edited["props"].get("server_fns", []):
        raise ValueError("the app has no #edited face with the live_slide server function (app.LIVE_SLIDER_JS)")
    for dependency in config["dependencies"]:
        if dependency.get("api_name") == f"slide_{label}":
            (trigger_id, _event), = dependency["targets"]
            slider = next(c for c in config["components"] if c["id"] == trigger_id)["props"]
            return {"path": f"{prefix}/run/predict", "fn_index": dependency["id"], "trigger_id": trigger_id,
                    "range": (slider["minimum"], slider["maximum"], slider["step"]),
                    "live_path": f"{prefix}/component_server", "component_id": edited["id"],
                    "label_index": json.loads(edited["props"]["props"]["labels"]).index(label)}
    raise ValueError(f"the app has no slide_{label} event; is --label a label of the model?")


def pageless_session(url: str, endpoint: dict, user: int, stop: threading.Event,
                     timeout_s: float) -> list[float]:
    """One Gradio session without a page: the slider's event once (which opens the session),
    then the page's live-move POST, one after another, until ``stop``; returns ms from each
    live request sent to its response read."""
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    session_hash = secrets.token_hex(6)

    def post(path: str, body: dict) -> bytes:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200 or b"data:image/png;base64," not in answer:
            raise RuntimeError(f"slider request answered {response.status}: {answer[:200]!r}")
        return answer

    values = slider_positions(*endpoint["range"], moves=10_000, user=user)
    post(endpoint["path"], {"data": [values[-1], None], "fn_index": endpoint["fn_index"],
                            "trigger_id": endpoint["trigger_id"], "session_hash": session_hash})
    times = []
    for value in values:
        if stop.is_set():
            break
        start = time.perf_counter()
        post(endpoint["live_path"], {"data": [session_hash, endpoint["label_index"], value],
                                     "component_id": endpoint["component_id"], "fn_name": "live_slide",
                                     "session_hash": session_hash})
        times.append(1000 * (time.perf_counter() - start))
    connection.close()
    return times


def summarise(name: str, moves: list[list[float | None]]) -> dict[str, float]:
    """p50/p95 of slider input -> image decoded, and of input -> server's answer arrived."""
    shown = [m[0] for m in moves]
    answered = [m[1] for m in moves]
    results = {f"{name} p50": statistics.median(shown), f"{name} p95": percentile(shown, 0.95)}
    if None not in answered:
        results[f"{name} p50 answered"] = statistics.median(answered)
        results[f"{name} p95 answered"] = percentile(answered, 0.95)
    return results


async def run(url: str, args: argparse.Namespace, label: str, app_pid: int) -> tuple[dict[str, float], list[str]]:
    """({name: ms}, lines on where the CPU went: with the pages idle, and while they moved)."""
    from playwright.async_api import async_playwright

    results = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        context, page = await open_user(browser, url, label)
        await move(page, label, 5, args.timeout)  # warm-up
        results.update(summarise("1 user", await move(page, label, args.moves, args.timeout)))
        await context.close()

        # Open every page first (one by one), so the timings are of moves, not page loads.
        # Each user on its own loopback address (127.0.0.k): real users' browsers do not share
        # Chromium's 6-connections-per-host pool, which Gradio's open event streams would fill.
        pages = args.sessions if args.pages is None else args.pages
        urls = [url.replace("127.0.0.1", f"127.0.0.{k + 2}") for k in range(pages)]
        users = [await open_user(browser, u, label) for u in urls]
        endpoint = slide_endpoint(url, label)
        # What the open pages cost with nobody moving (without app.STOP_LOADER_LOOP_JS, a frame
        # loop left by Gradio 6.31's loading screen made this about 0.055 cores per page).
        await asyncio.sleep(1)
        idle_start, idle_usage, idle_machine = time.monotonic(), cpu_by_kind(app_pid), cpu_seconds()
        await asyncio.sleep(args.idle_seconds)
        idle_wall, idle_used = time.monotonic() - idle_start, cpu_used(idle_usage, cpu_by_kind(app_pid))
        idle_machine = cpu_seconds() - idle_machine

        start, usage, machine = time.monotonic(), cpu_by_kind(app_pid), cpu_seconds()
        stop = threading.Event()
        pageless = [asyncio.to_thread(pageless_session, url, endpoint, pages + k + 1, stop, args.timeout)
                    for k in range(args.sessions - pages)]
        pageless_tasks = [asyncio.ensure_future(task) for task in pageless]
        try:
            per_user = await asyncio.gather(
                *(move(p, label, args.moves, args.timeout, user=k + 1) for k, (_, p) in enumerate(users))
            )
        finally:
            stop.set()
            per_session = await asyncio.gather(*pageless_tasks)
        wall, used = time.monotonic() - start, cpu_used(usage, cpu_by_kind(app_pid))
        machine = cpu_seconds() - machine
        name = f"{args.sessions} users" + (f", {pages} pages" if pages < args.sessions else "")
        results.update(summarise(name, [m for moves in per_user for m in moves]))
        if per_session:
            answered = [ms for times in per_session for ms in times]
            results[f"{args.sessions - pages} page-less p50"] = statistics.median(answered)
            results[f"{args.sessions - pages} page-less p95"] = percentile(answered, 0.95)
        await browser.close()
    cores = os.cpu_count()
    moves = pages * args.moves + sum(len(times) for times in per_session)
    lines = [
        f"{pages} pages open, idle, {idle_wall:.1f} s: {idle_machine / idle_wall:.2f} of {cores} cores busy "
        f"(in cores: {describe_cpu(idle_used, idle_wall)}; other processes "
        f"{(idle_machine - sum(idle_used.values())) / idle_wall:.2f})",
        f"{args.sessions} sessions moving ({moves} moves, {pages} in pages), {wall:.1f} s: "
        f"{machine / wall:.2f} of {cores} cores busy "
        f"(in cores: {describe_cpu(used, wall)}; other processes {(machine - sum(used.values())) / wall:.2f}); "
        f"per move, CPU ms: app.py {1000 * used.get('app.py', 0) / moves:.1f}; per page move, browser "
        f"{1000 * sum(v for k, v in used.items() if k not in ('app.py', 'driver')) / (pages * args.moves):.1f}",
    ]
    return results, lines


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(make_tiny_checkpoint(Path(tmp) / "tiny")) if args.tiny else args.checkpoint
        if args.label:
            label = args.label
        elif args.tiny:
            label = TINY_LABELS[0]
        else:
            from ccvae import CCVAE

            label = CCVAE.from_pretrained(checkpoint).label_names[0]
        label = "".join(c if c.isalnum() or c == "_" else "_" for c in label).strip("_")
        port = args.port or free_port()
        process = start_app(checkpoint, port)
        try:
            url = f"http://127.0.0.1:{port}/"
            results, cpu_lines = asyncio.run(run(url, args, label, process.pid))
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"slider input -> new image decoded, {args.moves} moves per user, "
          f"checkpoint {'random 64x64 (--tiny)' if args.tiny else args.checkpoint}, {os.cpu_count()} CPUs "
          "('answered': input -> the server's response had arrived; the rest is the page's own work)")
    for name, value in results.items():
        print(f"  {name:>25}: {value:7.1f} ms")
    for line in cpu_lines:
        print(f"  {line}")


if __name__ == "__main__":
    main(parse_args())
