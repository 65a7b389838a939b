"""`dreamrelation ui` driven in a real browser: Debian's headless Chromium through Playwright's Python
client (no browser download), data -> train (a few steps) -> generate -> compare on the toy world.

Asserts on what the page shows: the clips as playable videos, the loss curve drawn, validation videos, a
LoRA file whose download `dreamrelation generate` accepts, the base and LoRA videos playable, one clear
message for each kind of bad input while the server keeps serving, a run that goes on when its page is
closed, and no file served from outside the folder the UI was given.

Settings (for the README's screenshots): DREAMRELATION_UI_MODEL (default "tiny": the tiny random toy
model; "shipped" draws the toy world), DREAMRELATION_UI_STEPS (training steps, default 6) and
DREAMRELATION_UI_SCREENSHOTS (a folder: one PNG per page is written there).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dreamrelation.cli import app

CHROMIUM = os.environ.get("DREAMRELATION_CHROMIUM", "/usr/bin/chromium")
MODEL = os.environ.get("DREAMRELATION_UI_MODEL", "tiny")
STEPS = int(os.environ.get("DREAMRELATION_UI_STEPS", "6"))
SHOTS = os.environ.get("DREAMRELATION_UI_SCREENSHOTS")
# the flags a closed network needs: no background connections, no first-run or update checks
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = max(240_000, 5_000 * STEPS)  # training, generation: long on a busy machine
LOOK_MS = 60_000  # anything else the page shows

pytestmark = pytest.mark.slow
pytest.importorskip("gradio", reason="the web UI needs the ui extra: pip install -e '.[ui]'")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (its Python client)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`dreamrelation ui --root ROOT` in its own process, as a user starts it; a finished toy benchmark
    (2 steps, 2 prompts) in ROOT for the Compare page."""
    root = tmp_path_factory.mktemp("ui-root")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    bench = [sys.executable, "-m", "dreamrelation.cli", "toy", "benchmark", "--relation", "walking_towards",
             "--seeds", "0", "--methods", "base,dreamrelation", "--steps", "2", "--set", "eval_prompts=2",
             "--model", MODEL, "--output", str(root / "toy-benchmark")]  # fmt: skip
    benchmark = subprocess.Popen(bench, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = _free_port()
    log = open(root.parent / "ui-server.log", "w")  # noqa: SIM115 - closed below
    ui = subprocess.Popen(
        [sys.executable, "-m", "dreamrelation.cli", "ui", "--root", str(root), "--port", str(port)],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if ui.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError(
                        "ui did not start: " + (root.parent / "ui-server.log").read_text()
                    ) from None
                time.sleep(1)
        assert benchmark.wait(300) == 0, benchmark.stderr.read()
        yield url, root
    finally:
        ui.terminate()
        ui.wait(30)
        benchmark.kill()
        log.close()


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as p:
        # Playwright starts the browser with a new, empty profile (user-data-dir) of its own
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        yield context
        context.close()
        browser.close()


def _open(context, url: str):  # noqa: ANN001, ANN202 - a Playwright page
    tab = context.new_page()
    tab.set_default_timeout(LOOK_MS)
    tab.goto(url, wait_until="load")
    tab.wait_for_selector("#data-toy")
    return tab


def _fill(tab, selector: str, value: object) -> None:  # noqa: ANN001
    tab.locator(f"{selector} input, {selector} textarea").first.fill(str(value))


def _playable(tab, selector: str) -> None:  # noqa: ANN001
    """Every <video> under ``selector`` has decoded its first frame (readyState >= 2, a frame size)."""
    tab.wait_for_function(
        """sel => { const v = [...document.querySelectorAll(sel + ' video')];
                    return v.length > 0 && v.every(x => x.readyState >= 2 && x.videoWidth > 0); }""",
        arg=selector,
    )


def _shot(tab, name: str) -> None:  # noqa: ANN001
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        # the whole page in the viewport, so that videos below the fold are decoded and painted too
        tab.set_viewport_size({"width": 1400, "height": tab.evaluate("document.body.scrollHeight")})
        time.sleep(3)
        tab.screenshot(path=str(Path(SHOTS) / f"ui_{name}.png"), full_page=True)
        tab.set_viewport_size({"width": 1400, "height": 1000})


def test_data_train_generate_compare_in_a_real_browser(server, page, tmp_path: Path) -> None:  # noqa: ANN001
    url, root = server
    tab = _open(page, url)

    # 1. data: bad input first (a folder without clips, one outside the root), then the toy world
    (root / "no-clips").mkdir()
    _fill(tab, "#data-folder", root / "no-clips")
    tab.click("#data-open")
    tab.wait_for_selector("#data-message .dr-error")
    message = tab.inner_text("#data-message")
    assert "no-clips: no videos found" in message and "Fix: put the exemplar clips" in message
    _fill(tab, "#data-folder", "/etc")
    tab.click("#data-open")
    tab.wait_for_selector("#data-message:has-text('outside the folders this UI may read')")
    tab.click("#data-toy")
    tab.wait_for_selector("#data-message:has-text('20 clips in')")
    assert "20 with masks" in tab.inner_text("#data-message")
    _playable(tab, "#data-clips")
    assert tab.locator("#data-masks img").count() >= 1  # the mask overlays
    assert "walking towards each other" in tab.inner_text("#data-captions")
    _shot(tab, "data")

    # 2. train: a setting out of range is refused naming it; then a short run to the end
    tab.get_by_role("tab", name="2 · Train").click()
    assert "toy-world/data/walking_towards/seed0" in tab.locator("#train-data textarea").input_value()
    _fill(tab, "#train-model", MODEL)
    _fill(tab, "#train-max-steps", 0)
    tab.click("#train-start")
    tab.wait_for_selector("#train-message:has-text('max_steps: Input should be greater than 0')")
    _fill(tab, "#train-max-steps", STEPS)
    _fill(tab, "#train-validation-every", max(1, STEPS // 2))
    _fill(tab, "#train-checkpoint-every", max(1, STEPS // 2))
    _fill(tab, "#train-warmup-steps", 1)
    tab.click("#train-start")
    tab.wait_for_selector("#train-message:has-text('dreamrelation train --config')")
    tab.click("#train-start")  # a second run into the busy folder
    tab.wait_for_selector("#train-message:has-text('still writing to this folder')")
    # closing the page does not stop the run: a new page finds it going on, then finished
    tab.close()
    tab = _open(page, url)
    tab.get_by_role("tab", name="2 · Train").click()
    tab.wait_for_selector(f"#train-status:has-text('done · train · step {STEPS} / {STEPS}')", timeout=WAIT_MS)
    # the loss curves are drawn: the plot's image holds coloured line pixels (axes and text are grey)
    tab.wait_for_function(
        """() => { const im = document.querySelector('#train-loss img');
                   if (!im || !im.complete || !im.naturalWidth) return false;
                   const c = document.createElement('canvas');
                   c.width = im.naturalWidth; c.height = im.naturalHeight;
                   const g = c.getContext('2d'); g.drawImage(im, 0, 0);
                   const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
                   for (let i = 0; i < d.length; i += 4) {
                     const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
                     if (hi - lo > 80) n++; }
                   return n > 300; }"""
    )
    _playable(tab, "#train-validation")
    link = tab.locator("#train-files a[download='relation_lora.safetensors']")
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    lora = tmp_path / "downloaded_lora.safetensors"
    lora.write_bytes(response.body())
    _shot(tab, "train")
    # the downloaded file is what `dreamrelation generate --lora` takes
    prompt = "a red circle and a blue square are walking towards each other."
    result = CliRunner().invoke(
        app,
        ["generate", "--lora", str(lora), "--prompt", prompt, "--output", str(tmp_path / "cli-videos"),
         "--backbone", "toy", "--model", MODEL, "--dtype", "float32", "--steps", "2", "--num-frames", "16",
         "--height", "32", "--width", "32"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "cli-videos").glob("*.mp4"))

    # 3. generate: base and LoRA side by side, playable, with the downloads
    tab.get_by_role("tab", name="3 · Generate").click()
    _fill(tab, "#gen-model", MODEL)
    _fill(tab, "#gen-steps", 1)
    tab.click("#gen-go")
    tab.wait_for_selector(
        "#gen-message:has-text('num_inference_steps: Input should be greater than or equal to 2')"
    )
    _fill(tab, "#gen-steps", 24 if MODEL == "shipped" else 2)
    tab.click("#gen-go")
    tab.wait_for_selector("#gen-message:has-text('Rendered with seed 0')", timeout=WAIT_MS)
    _playable(tab, "#gen-base")
    _playable(tab, "#gen-lora-video")
    assert tab.locator("#gen-files a[download$='.mp4']").count() == 2
    assert tab.locator("#gen-files a[download='relation_lora.safetensors']").count() == 1
    _shot(tab, "generate")

    # 4. compare: a finished `toy benchmark` folder: its table, plot and videos
    tab.get_by_role("tab", name="4 · Compare").click()
    _fill(tab, "#cmp-folder", root / "no-clips")
    tab.click("#cmp-open")
    tab.wait_for_selector("#cmp-message:has-text('holds no benchmark.md')")
    _fill(tab, "#cmp-folder", root / "toy-benchmark")
    tab.click("#cmp-open")
    tab.wait_for_selector("#cmp-message:has-text('benchmark results in')")
    assert "DreamRelation" in tab.inner_text("#cmp-table") or "dreamrelation" in tab.inner_text("#cmp-table")
    tab.wait_for_function(
        "() => { const im = document.querySelector('#cmp-plot img'); return im && im.naturalWidth > 0; }"
    )
    _playable(tab, "#cmp-videos")
    _shot(tab, "compare")

    # image-to-video: the first-frame box and the images appear with a backbone that has the form,
    # the box set and fixed where it has no other; they go again with a text-only one
    tab.get_by_role("tab", name="2 · Train").click()
    assert (
        tab.locator("#train-first-frame").is_hidden() and tab.locator("#train-validation-image").is_hidden()
    )
    for name in ("wan22_a14b_i2v", "mochi"):
        tab.locator("#train-backbone input").click()
        tab.get_by_role("option", name=name, exact=True).click()
        state = "visible" if name != "mochi" else "hidden"
        tab.wait_for_selector("#train-first-frame", state=state)
        tab.wait_for_selector("#train-validation-image", state=state)
        if name != "mochi":
            box = tab.locator("#train-first-frame input[type=checkbox]")
            assert box.is_checked() and box.is_disabled()
            assert "image-to-video only" in tab.inner_text("#train-image-note")
        tab.get_by_role("tab", name="3 · Generate").click()
        tab.wait_for_selector("#gen-image", state=state)
        assert name in tab.inner_text("#gen-image-note")
        tab.get_by_role("tab", name="2 · Train").click()

    # nothing outside the root is served, whatever the URL asks for
    for path in ("/etc/passwd", str(Path(sys.executable).resolve())):
        assert page.request.get(f"{url}/gradio_api/file={path}").status == 403
