"""The sweep gallery (`index.html`) in a real headless browser (Debian's chromium, driven by Playwright),
opened from the file system and from a plain static server: no console or page errors, no failed
requests, every clip plays (metadata, duration, a decoded frame), every poster and link loads, a failed
cell shows its reason as text, and a full-page screenshot is a picture. One preview sweep and one
browser launch per module; a missing chromium is a failure (`.ci/run` installs the apt package)."""

from __future__ import annotations

import functools
import io
import json
import mimetypes
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_index import FAILED, MEMBERS, REASON, aivp, run_sweep

from aivp_batch import sweep_index as si

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls out to the (closed) network
    "--disable-component-update",
    "--disable-sync",
]
NO_CHROMIUM = (
    f"chromium not found ({CHROMIUM}): the gallery's browser test needs Debian's `chromium` package; "
    "`.ci/run` installs it (apt-get install -y --no-install-recommends chromium)"
)
WAIT_MS = 20_000
DONE = [m for m in MEMBERS if m != FAILED]


def test_chromium_is_installed() -> None:
    assert Path(CHROMIUM).is_file(), NO_CHROMIUM


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_index's sweep: one member's take failed (a reason that is markup), gallery rewritten."""
    root = tmp_path_factory.mktemp("index-browser")
    _, sweep_dir, _ = run_sweep(root)
    member = sweep_dir / FAILED
    log_path = member / "video/log/shot-03.json"
    log = json.loads(log_path.read_text())
    log.update(status="failed", error=REASON, clip=None, delivered=None, cost_usd=0.0)
    log_path.write_text(json.dumps(log))
    (member / "video/clips/shot-03.mp4").unlink()
    proc = aivp("index", str(sweep_dir), cwd=root)
    assert proc.returncode == 0, proc.stderr
    return sweep_dir


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(NO_CHROMIUM)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    codes: list[tuple[str, int]]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the browser closing a media connection it no longer needs is no error of the page


class _Handler(SimpleHTTPRequestHandler):
    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self.server.codes.append((self.path, int(code)))  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module", params=["file", "http"])
def gallery(request: pytest.FixtureRequest, browser: Browser, sweep: Path) -> Iterator[dict]:
    """index.html open in a page, every event recorded, once every video has its metadata (or an error)."""
    server = None
    if request.param == "http":
        server = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(sweep)))
        server.codes = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/{si.INDEX_HTML}"
    else:
        url = (sweep / si.INDEX_HTML).as_uri()
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    seen: dict[str, list] = {"console": [], "pageerror": [], "dialog": [], "failed": [], "responses": []}
    page.on("console", lambda m: m.type == "error" and seen["console"].append(f"{m.text} ({m.location})"))
    page.on("pageerror", lambda exc: seen["pageerror"].append(str(exc)))
    page.on("dialog", lambda d: (seen["dialog"].append(d.message), d.dismiss()))
    page.on("requestfailed", lambda r: seen["failed"].append((r.resource_type, r.url, r.failure)))
    page.on("response", lambda r: seen["responses"].append((r.request.resource_type, r.url, r.status)))
    response = page.goto(url, wait_until="load", timeout=WAIT_MS)
    try:  # settled: each video has its metadata or has failed (the tests say which)
        page.wait_for_function(
            "() => [...document.querySelectorAll('video')].every(v => v.error || v.readyState >= 1)",
            timeout=WAIT_MS,
        )
    except PlaywrightTimeout:
        pass
    yield {"variant": request.param, "url": url, "page": page, "seen": seen, "server": server,
           "status": response.status if response else None, "sweep": sweep}  # fmt: skip
    page.close()
    if server is not None:
        server.shutdown()
        server.server_close()


def _videos(page: Page) -> list[dict]:
    return page.evaluate(
        """() => [...document.querySelectorAll('video')].map(v => ({
            member: v.closest('td').dataset.member, src: v.getAttribute('src'), currentSrc: v.currentSrc,
            poster: v.poster, preload: v.preload, readyState: v.readyState, duration: v.duration,
            width: v.videoWidth, height: v.videoHeight,
            error: v.error && {code: v.error.code, message: v.error.message}}))"""
    )


def _codec(clip: Path) -> str:
    """The clip's H.264 codec string (`avc1.PPCCLL`, from its avcC box), as canPlayType takes it."""
    data = clip.read_bytes()
    at = data.find(b"avcC")
    assert at > 0, f"{clip}: no avcC box (not H.264?)"
    profile, compat, level = data[at + 5], data[at + 6], data[at + 7]
    return f"avc1.{profile:02x}{compat:02x}{level:02x}"


def test_every_video_has_a_source_the_browser_plays(gallery: dict) -> None:
    page: Page = gallery["page"]
    try:
        page.wait_for_function(
            """() => { const vs = [...document.querySelectorAll('video')];
                return vs.length > 0 && vs.every(v => v.error === null && v.readyState >= 1 && v.duration > 0
                                                 && v.videoWidth > 0); }""",
            timeout=WAIT_MS,
        )
    except PlaywrightTimeout:
        pytest.fail(f"{gallery['variant']}: videos without metadata after {WAIT_MS} ms: {_videos(page)}")
    videos = _videos(page)
    assert [v["member"] for v in videos] == DONE, videos
    for v in videos:
        assert v["preload"] in ("metadata", "auto"), v  # its duration and size show without a click
        assert v["error"] is None and v["readyState"] >= 1 and v["duration"] > 0, v
        assert (v["width"], v["height"]) == (640, 360), v
        assert (
            v["currentSrc"].endswith(v["src"])
            and unquote(v["src"]) == f"{v['member']}/video/clips/shot-03.mp4"
        ), v
        mime = mimetypes.guess_type(unquote(v["src"]))[0]
        codecs = _codec(gallery["sweep"] / unquote(v["src"]))
        can = page.evaluate(
            "([m, c]) => { const v = document.createElement('video');"
            " return [v.canPlayType(m), v.canPlayType(m + '; codecs=\"' + c + '\"')]; }",
            [mime, codecs],
        )
        assert mime == "video/mp4" and can[0] != "" and can[1] == "probably", (v["src"], mime, codecs, can)
    # Metadata is not playback: seek every clip to its middle and wait for a decoded frame there. (A
    # server without Range requests, like http.server, makes a clip unseekable: the seek lands on 0.)
    page.evaluate(
        "() => document.querySelectorAll('video').forEach(v => { v.currentTime = v.duration / 2; })"
    )
    try:
        page.wait_for_function(
            """() => [...document.querySelectorAll('video')].every(v => !v.seeking && v.readyState >= 2
                                                                       && v.error === null)""",
            timeout=WAIT_MS,
        )
    except PlaywrightTimeout:
        pytest.fail(f"{gallery['variant']}: no frame decoded after a seek: {_videos(page)}")
    if gallery["variant"] == "file":
        times = page.evaluate("() => [...document.querySelectorAll('video')].map(v => v.currentTime)")
        assert all(t > 0 for t in times), times


def test_every_poster_and_link_loads(gallery: dict) -> None:
    page: Page = gallery["page"]
    images = page.evaluate(
        """async () => {
            const urls = [...document.querySelectorAll('video')].map(v => v.poster)
                .concat([...document.querySelectorAll('a[href$=".png"]')].map(a => a.href));
            return Promise.all(urls.map(url => new Promise(done => {
                const img = new Image();
                img.onload = () => done({url, width: img.naturalWidth, height: img.naturalHeight});
                img.onerror = () => done({url, width: 0, height: 0, error: true});
                img.src = url;
            })));
        }"""
    )
    assert len(images) == len(DONE) + 1 and all(i["url"] for i in images), images
    for image in images:
        assert image["width"] > 0 and image["height"] > 0, image
    posters = [unquote(i["url"]) for i in images[:-1]]
    assert all(p.endswith(f"/{si.POSTERS}/{m}/shot-03.jpg") for p, m in zip(posters, DONE, strict=True)), (
        posters
    )
    assert images[-1]["url"].endswith(f"/{si.CONTACT_SHEET}")
    # Every link on the page (contact sheet, index.json) resolves to a file of the sweep.
    hrefs = page.evaluate(
        "() => [...document.querySelectorAll('a[href]')].map(a => [a.getAttribute('href'), a.href])"
    )
    assert len(hrefs) == 2 and all(not urlsplit(h).scheme and not h.startswith("/") for h, _ in hrefs), hrefs
    links = [link for _, link in hrefs]
    for link in links:
        if gallery["variant"] == "file":
            path = Path(url2pathname(urlsplit(link).path))
            assert path.is_file() and path.parent == gallery["sweep"], link
        else:
            got = page.request.get(link)
            assert got.status == 200 and got.body(), (link, got.status)
    if gallery["variant"] == "http":
        data = json.loads(page.request.get(links[1]).body())
        assert len(data["rows"]) == len(MEMBERS)


def test_a_failed_cell_shows_its_reason_as_text(gallery: dict) -> None:
    page: Page = gallery["page"]
    cell = page.locator(f'td[data-member="{FAILED}"]')
    assert cell.count() == 1 and "failed" in (cell.get_attribute("class") or "").split()
    assert cell.locator("video").count() == 0
    reason = cell.locator(".fail")
    assert reason.is_visible() and reason.inner_text() == f"failed: {REASON}"
    assert page.evaluate("() => document.scripts.length") == 0  # the reason's markup made no element
    assert gallery["seen"]["dialog"] == []  # ... and ran nothing
    for member in DONE:  # a done cell shows no reason
        assert page.locator(f'td[data-member="{member}"] .fail').count() == 0


def test_a_full_page_screenshot_is_a_picture(gallery: dict, tmp_path: Path) -> None:
    page: Page = gallery["page"]
    page.wait_for_function(
        "() => [...document.images].every(i => i.complete) && document.fonts.status === 'loaded'",
        timeout=WAIT_MS,
    )
    png = page.screenshot(full_page=True, path=tmp_path / f"gallery-{gallery['variant']}.png")
    shot = Image.open(io.BytesIO(png))
    assert shot.format == "PNG" and shot.width >= 800 and shot.height >= 300, shot.size
    rgb = shot.convert("RGB")
    extrema = rgb.getextrema()
    assert any(lo != hi for lo, hi in extrema), extrema  # not a single colour
    # Each clip's box shows a picture (its poster / first frame), not a flat rectangle.
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('video')].map(v => { const r = v.getBoundingClientRect();
            return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })"""
    )
    assert len(boxes) == len(DONE)
    for left, top, width, height in boxes:
        assert width >= 300 and height >= 150, boxes
        # the middle of the box, above the controls bar
        box = (left + width * 0.2, top + height * 0.2, left + width * 0.8, top + height * 0.6)
        crop = rgb.crop(tuple(int(x) for x in box))
        assert any(lo != hi for lo, hi in crop.getextrema()), (boxes, tmp_path)


def test_the_page_loads_without_errors_or_failed_requests(gallery: dict) -> None:
    """Last in the module: everything the other tests made the page do counts too."""
    seen, variant = gallery["seen"], gallery["variant"]
    assert gallery["status"] == 200, gallery["status"]
    assert seen["console"] == [], f"{variant}: console errors: {seen['console']}"
    assert seen["pageerror"] == [], f"{variant}: page errors: {seen['pageerror']}"
    # Chromium drops a clip's request once it has the metadata it preloaded (net::ERR_ABORTED): that is
    # the browser's choice, not a failed load; each such clip has its metadata (checked above).
    failed = [f for f in seen["failed"] if not (f[0] == "media" and f[2] == "net::ERR_ABORTED")]
    assert failed == [], f"{variant}: failed requests: {failed}"
    bad = [r for r in seen["responses"] if r[2] >= 400]
    assert bad == [], f"{variant}: error responses: {bad}"
    base = gallery["url"].rsplit("/", 1)[0] + "/"
    loaded = {
        unquote(u[len(base) :]) for _, u, status in seen["responses"] if u.startswith(base) and status < 400
    }
    for member in DONE:  # the page itself asked for every clip and poster (no load() from a test)
        for rel in (f"{member}/video/clips/shot-03.mp4", f"{si.POSTERS}/{member}/shot-03.jpg"):
            assert rel in loaded, f"{variant}: the page never loaded {rel} (loaded: {sorted(loaded)})"
    if gallery["server"] is not None:  # what the server saw, favicon and all
        errors = [c for c in gallery["server"].codes if c[1] >= 400]
        assert errors == [], f"the static server answered: {errors}"
        assert ("/" + si.INDEX_HTML, 200) in gallery["server"].codes
