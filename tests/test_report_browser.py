"""`fedsynth report` opened in a real headless Chromium: it renders, its plots show, it fetches nothing.

The release is made in-process (the generator over ``CentralAggregator``, the same rounds as a
federation without Flower) so the test stays fast. Chromium is driven through the DevTools
protocol over ``--remote-debugging-pipe`` (no extra Python package): the page is loaded with
every host name unresolvable, every network request the page makes is logged, and each plot's
on-screen box is screenshotted and checked for ink.
"""

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedsynth.cli import bundled, main
from fedsynth.client.organisation import Organisation
from fedsynth.common.generator import GeneratorSettings
from fedsynth.common.schema import load_schema
from fedsynth.server.central import CentralAggregator
from fedsynth.server.job import JobConfig, run_job_with
from fedsynth.simulations.split import split_table

SCHEMA = load_schema(bundled("adult.schema.yaml"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
SECTIONS = ["summary", "privacy", "fidelity", "job--schema-and-versions", "technical-appendix--ledger-events--plan-and-schema"]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A small three-organisation release, made by the job's own code on a ``CentralAggregator``."""
    out = tmp_path_factory.mktemp("report") / "release"
    settings = GeneratorSettings(rounds=1, per_round=2, fit_iters=50, final_iters=100, score_sample=5_000)
    config = JobConfig(schema=SCHEMA, parties=3, epsilon=2.0, delta=1e-6, out=out, min_survivors=3,
                       generator=settings, labels="generator")
    table = SCHEMA.read_csv(bundled("adult.csv")).iloc[:1500]
    parties = split_table(table, 3, "dirichlet:0.5", SCHEMA.label, seed=0)
    orgs = [Organisation(f"org-{i}", lambda _s, t=t: t, accepts=SCHEMA) for i, t in enumerate(parties)]
    run_job_with(lambda ledger: CentralAggregator(orgs, ledger, seed=0), config, lambda _m: None)
    return out


@pytest.fixture(scope="module")
def report(release) -> Path:
    before = {p.name: p.read_bytes() for p in release.iterdir()}
    assert main(["report", str(release)]) == 0
    assert {p.name: p.read_bytes() for p in release.iterdir() if p.name != "report.html"} == before  # read only
    return release / "report.html"


def _above_4(fd: int) -> int:
    """The same pipe end at a descriptor above 4, so that moving it onto 3 or 4 clobbers nothing."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class DevTools:
    """A minimal Chrome DevTools protocol client over Chromium's debugging pipe (fds 3 and 4)."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._to_browser = map(_above_4, os.pipe())
        self._from_browser, from_browser = map(_above_4, os.pipe())

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                 "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking", "--no-first-run",
                 "--disable-extensions", f"--user-data-dir={profile}", "--hide-scrollbars", "about:blank"]
        # bash (dash takes no fd above 9) moves the pipe ends to fds 3 and 4, where --remote-debugging-pipe expects them
        wire = f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser} {to_browser}<&- {from_browser}>&-'
        self.proc = subprocess.Popen(["bash", "-c", wire, CHROMIUM, *flags], pass_fds=(to_browser, from_browser),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _message(self, timeout: float = 60.0) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], timeout)
            assert ready, f"Chromium sent nothing for {timeout} s"
            chunk = os.read(self._from_browser, 1 << 20)
            assert chunk, "Chromium closed its debugging pipe"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        sent = self._send(method, session, params)
        while True:
            reply = self._message()
            if reply.get("id") == sent:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, since: int = 0) -> dict:
        """The first event ``method`` among those from the ``since``-th on, reading until it comes."""
        for event in self.events[since:]:
            if event.get("method") == method:
                return event
        while True:
            event = self._message()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _send(self, method: str, session: str | None, params: dict) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def close(self) -> None:
        """Ask the browser to quit (its reply may never come: it is exiting) and wait until it has."""
        try:
            self._send("Browser.close", None, {})
        except BrokenPipeError:  # already gone
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def open_in_chromium(page: Path, profile: Path) -> tuple[dict, list[Image.Image], list[str]]:
    """Load ``page``; return its layout (from the DOM), a screenshot of each <img>'s box, and the
    URLs of every request the page made."""
    browser = DevTools(profile)
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.call("Emulation.setDeviceMetricsOverride", session, width=1200, height=900, deviceScaleFactor=1,
                     mobile=False)
        browser.call("Network.enable", session)
        browser.call("Page.enable", session)
        since = len(browser.events)
        browser.call("Page.navigate", session, url=page.as_uri())
        browser.wait_for("Page.loadEventFired", since)
        layout = browser.call("Runtime.evaluate", session, returnByValue=True, expression="""JSON.stringify({
            url: location.href, ready: document.readyState,
            sections: [...document.querySelectorAll('section')].map(s => s.id),
            headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
            summary: (s => ({bottom: s.getBoundingClientRect().bottom + scrollY, text: s.innerText}))(
              document.getElementById('summary')),
            text: document.body.innerText,
            images: [...document.images].map(i => { const r = i.getBoundingClientRect();
              return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height,
                      natural: i.naturalWidth, complete: i.complete}; })})""")
        layout = json.loads(layout["result"]["value"])
        shots = []
        for box in layout["images"]:
            clip = {k: box[k] for k in ("x", "y", "width", "height")} | {"scale": 1}
            png = browser.call("Page.captureScreenshot", session, format="png", clip=clip, captureBeyondViewport=True)
            shots.append(Image.open(io.BytesIO(base64.b64decode(png["data"]))).convert("RGB"))
        requests = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    finally:
        browser.close()
    return layout, shots, requests


def inked(image: Image.Image) -> tuple[float, int]:
    """Share of pixels that are not near-white, and the number of distinct colours."""
    pixels = np.asarray(image, dtype=np.uint32).reshape(-1, 3)
    packed = (pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]
    return float((pixels.min(axis=1) < 230).mean()), len(np.unique(packed))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run does)")
def test_report_renders_with_visible_plots_and_no_external_request(report, tmp_path):
    layout, shots, requests = open_in_chromium(report, tmp_path / "profile")
    assert layout["url"] == report.as_uri() and layout["ready"] == "complete"
    assert layout["sections"] == SECTIONS
    assert layout["summary"]["bottom"] <= 900, "the summary must fit the first screen (1200 x 900)"
    assert "differentially private per record" in layout["summary"]["text"]
    assert "average total variation distance" in layout["summary"]["text"]
    assert " codes" not in layout["text"]  # values are named (categories, bins), not counted as codes
    assert "differentially private per record" in layout["text"] and "noise band" in layout["text"]
    assert len(layout["images"]) == 3  # budget, per-marginal fidelity, 1-way small multiples
    for box, shot in zip(layout["images"], shots, strict=True):
        assert box["complete"] and box["natural"] > 0, "an embedded PNG did not decode"
        assert box["width"] > 300 and box["height"] > 150
        ink, colours = inked(shot)
        assert ink > 0.03 and colours > 20, f"plot at y={box['y']:.0f} looks blank ({ink:.1%} ink, {colours} colours)"
    assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests


def test_report_html_references_nothing_outside_itself(report):
    text = report.read_text(encoding="utf-8")
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text) + re.findall(r"url\(([^)]*)\)", text)
    assert references and all(r.startswith(("data:", "#")) for r in references), references
    assert "<script" not in text and "<link" not in text
    for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', text):  # each plot is a real, non-uniform image
        assert inked(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB"))[1] > 20


def test_report_recomputes_the_statements_epsilon_from_the_ledger(report, release):
    statement = json.loads((release / "privacy.json").read_text())
    text = report.read_text(encoding="utf-8")
    assert f"epsilon {statement['epsilon']:.6g}, as privacy.json states" in text
    assert f"t = {statement['trust']['min_honest_survivors_t']} of the n = 3 organisations" in text


def test_report_errors_name_the_missing_file(release, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(release, broken)
    (broken / "report.html").unlink(missing_ok=True)
    (broken / "measurements.json").unlink()
    assert main(["report", str(broken)]) == 2
    assert "missing measurements.json" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such release directory" in capsys.readouterr().err
    assert not (broken / "report.html").exists()
