"""Try examples/web in a real headless Chromium against label-image, photo by photo.

    python benchmarks/check_web_page.py --model_dir TFJS_DIR --graph graph.pb --labels labels.txt \\
        [--screenshot page.png] [--min_agree 49] PHOTO...

Serves a copy of examples/web with the TF.js export as its `model/` folder and a
local TF.js (tf-core + tf-backend-cpu + tf-converter from tests/js/node_modules,
concatenated into `vendor/tf.min.js`, so nothing comes from the network), opens it
in headless Chromium, and chooses each photo through the page's own file input
(DevTools' DOM.setFileInputFiles: the same path as a person clicking "choose") or drops it
on the page (Input.dispatchDragEvent), alternately, then reads the labels and scores the
page shows. label-image classifies the same photos
from the frozen graph. Prints a JSON summary (agreement, largest score difference,
timings, the page's console errors) and exits 1 when fewer than --min_agree photos
agree: the same top label for a single-label model, the same labels at or above
their thresholds for a multi-label one.

Chromium is driven over --remote-debugging-pipe (DevTools protocol messages on file
descriptors 3 and 4), which needs no websocket library. Needs Debian's `chromium`
package and `npm ci` in tests/js. tests/test_tfjs.py calls `check_page`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "examples" / "web"
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
# The pure-JavaScript bundles tests/js installs; concatenated they give the page a `tf` global.
TFJS_BUNDLES = ("@tensorflow/tfjs-core/dist/tf-core.min.js",
                "@tensorflow/tfjs-backend-cpu/dist/tf-backend-cpu.min.js",
                "@tensorflow/tfjs-converter/dist/tf-converter.min.js")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
                  "--remote-debugging-pipe", "--window-size=900,1000")


def assemble_tfjs(destination: Path, *, node_modules: Path = NODE_MODULES) -> Path:
    """Write tf-core + tf-backend-cpu + tf-converter (UMD bundles) as one script at `destination`."""
    parts = []
    for bundle in TFJS_BUNDLES:
        path = node_modules / bundle
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `npm ci` in {node_modules.parent}")
        parts.append(path.read_bytes())
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(b"\n;\n".join(parts))
    return destination


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


_TRAMPOLINE = """import os, sys
read, write = int(sys.argv[1]), int(sys.argv[2])
os.dup2(read, 3)
os.dup2(write, 4)
os.close(read)
os.close(write)
os.execvp(sys.argv[3], sys.argv[3:])
"""


class DevTools:
    """A headless Chromium and its DevTools protocol over a pipe: send commands, keep events."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # Chromium reads commands on fd 3 and writes on fd 4. The child's ends are first moved
        # to numbers >= 10 (so neither already sits on 3 or 4), then a tiny Python trampoline puts
        # them in place and execs Chromium (no preexec_fn: unsafe with the server thread running;
        # no sh: dash cannot name descriptors above 9).
        read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD_CLOEXEC, 10)
        write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_browser_read, from_browser_write):
            os.close(fd)
        self._log_path = profile.parent / "chromium-stderr.log"  # a file: a full pipe would stall Chromium
        self.process = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(read), str(write), binary, *CHROMIUM_FLAGS,
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log_path.open("wb"),
            pass_fds=(read, write))
        os.close(read)
        os.close(write)
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                for waiting in self._replies.values():
                    waiting.put({"error": {"message": "Chromium closed the DevTools pipe"}})
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message and message["id"] in self._replies:
                    self._replies[message["id"]].put(message)
                else:
                    self.events.append(message)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        """Run one DevTools command and return its result; RuntimeError on a protocol error."""
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
            self._replies[message_id] = queue.Queue()
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            reply = self._replies[message_id].get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"DevTools {method}: no answer in {timeout} s") from None
        finally:
            del self._replies[message_id]
        if "error" in reply:
            raise RuntimeError(f"DevTools {method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def close(self) -> str:
        """Close the browser; returns what it printed on stderr (for diagnostics)."""
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        return self._log_path.read_text(errors="replace")


class Page:
    """One tab of DevTools' browser, attached in flat mode."""

    def __init__(self, devtools: DevTools, url: str) -> None:
        self.devtools = devtools
        target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "DOM"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 900, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 60) -> dict[str, Any]:
        return self.devtools.send(method, params, session=self.session, timeout=timeout)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page: {result['exceptionDetails'].get('text')}: {expression}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float) -> Any:
        """Poll an expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page: still not {expression!r} after {timeout} s; "
                                   f"status: {self.evaluate(_STATUS)!r}")
            time.sleep(0.05)

    def choose_file(self, path: Path) -> None:
        """Choose a file with the page's <input type=file>, as a person would (fires `change`)."""
        handle = self.send("Runtime.evaluate", {"expression": "document.getElementById('file')"})["result"]
        self.send("DOM.setFileInputFiles", {"files": [str(path)], "objectId": handle["objectId"]})

    def drop_file(self, path: Path) -> None:
        """Drag a file from outside the browser and drop it on the page's drop zone."""
        x, y = self.evaluate("(() => { const box = document.getElementById('drop').getBoundingClientRect();"
                             " return [box.x + box.width / 2, box.y + box.height / 2]; })()")
        data = {"items": [], "files": [str(path)], "dragOperationsMask": 1}
        for kind in ("dragEnter", "dragOver", "drop"):
            self.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": data})

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))


_STATUS = "document.getElementById('status')?.textContent"
_SHOWN = """JSON.stringify({
  state: document.body.dataset.state,
  file: document.body.dataset.file,
  status: document.getElementById('status').textContent,
  timing: document.getElementById('timing').textContent,
  results: [...document.querySelectorAll('#results li')].map(
      li => ({label: li.dataset.label, score: Number(li.dataset.score)})),
})"""


def page_results(*, model_dir: Path, photos: Sequence[Path], chromium: str = "chromium",
                 screenshot: Path | None = None, timeout: float = 120) -> dict[str, Any]:
    """Open the page with this TF.js export, choose each photo in turn; return what the page showed.

    {"photos": [{"photo", "via", "state", "results": [{"label", "score"}...], "status", "timing"}...],
     "load_s", "seconds_per_photo", "about", "console_errors"}
    """
    with tempfile.TemporaryDirectory(prefix="retrain-web-") as tmp:
        site = Path(tmp) / "site"
        shutil.copytree(WEB, site, ignore=shutil.ignore_patterns("model"))  # the README's export may sit there
        shutil.copytree(model_dir, site / "model")
        assemble_tfjs(site / "vendor" / "tf.min.js")
        with serve(site) as base_url:
            devtools = DevTools(shutil.which(chromium) or chromium, Path(tmp) / "profile")
            try:
                started = time.monotonic()
                page = Page(devtools, f"{base_url}index.html")
                page.wait_for("document.body && ['ready', 'error'].includes(document.body.dataset.state)",
                              timeout=timeout)
                if page.evaluate("document.body.dataset.state") == "error":
                    raise RuntimeError(f"page: {page.evaluate(_STATUS)}")
                load_s = time.monotonic() - started
                about = page.evaluate("[...document.querySelectorAll('#about dd')].map(dd => dd.textContent)")
                shown = []
                started = time.monotonic()
                for index, photo in enumerate(photos):
                    page.evaluate("delete document.body.dataset.file")
                    # Both ways a person gives the page a photo: choose (even) and drop (odd).
                    via = "drop" if index % 2 else "choose"
                    (page.drop_file if via == "drop" else page.choose_file)(photo.resolve())
                    page.wait_for("document.body.dataset.file !== undefined && "
                                  "['done', 'error'].includes(document.body.dataset.state)", timeout=timeout)
                    shown.append({"photo": str(photo), "via": via, **json.loads(page.evaluate(_SHOWN))})
                per_photo = (time.monotonic() - started) / max(1, len(photos))
                if screenshot is not None:
                    page.evaluate("document.querySelector('details').open = true")
                    page.screenshot(screenshot)
            finally:
                stderr = devtools.close()
        errors = [event["params"] for event in devtools.events
                  if event.get("method") == "Runtime.exceptionThrown"
                  or event.get("method") == "Runtime.consoleAPICalled" and event["params"].get("type") == "error"]
        if not shown and stderr:
            errors.append({"chromium_stderr": stderr[-2000:]})
    return {"photos": shown, "load_s": load_s, "seconds_per_photo": per_photo, "about": about,
            "console_errors": errors}


def label_image_results(*, graph: Path, labels: Path, photos: Sequence[Path]) -> list[dict[str, Any]]:
    """label-image's answer for each photo, from the frozen graph: `predictions` (every label, best first) and,
    for a multi-label model, `labels` (those at or above their thresholds)."""
    count = len([line for line in labels.read_text(encoding="utf-8").splitlines() if line])
    command = shutil.which("label-image", path=str(Path(sys.executable).parent)) or shutil.which("label-image")
    if command is None:
        raise FileNotFoundError("label-image is not installed: pip install -e .")
    result = subprocess.run([command, "--graph", str(graph), "--labels", str(labels), "--json",
                             "--top_k", str(count), *map(str, photos)],
                            check=False, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"label-image failed ({result.returncode}): {result.stderr[-2000:]}")
    answers = json.loads(result.stdout)
    by_photo = {str(Path(answer["image"])): answer for answer in answers}
    return [by_photo[str(Path(photo))] for photo in photos]


def check_page(*, model_dir: Path, graph: Path, labels: Path, photos: Sequence[Path], chromium: str = "chromium",
               screenshot: Path | None = None) -> dict[str, Any]:
    """What the page shows against label-image: counts, largest score difference, details.

    A single-label model agrees on a photo when the top labels are the same; a multi-label one when the page
    shows exactly the labels label-image gives (every label at or above its threshold), in the same order.
    """
    expected = label_image_results(graph=graph, labels=labels, photos=photos)
    shown = page_results(model_dir=model_dir, photos=photos, chromium=chromium, screenshot=screenshot)
    rows = []
    for photo, want, got in zip(photos, expected, shown["photos"]):
        want_scores = {p["label"]: p["score"] for p in want["predictions"]}
        diffs = [abs(r["score"] - want_scores[r["label"]]) for r in got["results"] if r["label"] in want_scores]
        page = [r["label"] for r in got["results"]]
        if "labels" in want:  # multi-label: the labels at or above their thresholds, best first
            label_image = sorted(want["labels"], key=lambda label: -want_scores[label])
        else:
            label_image, page = want["predictions"][0]["label"], page[0] if page else None
        rows.append({"photo": str(photo), "label_image": label_image,
                     "label_image_score": want["predictions"][0]["score"], "page": page,
                     "page_score": got["results"][0]["score"] if got["results"] else None,
                     "max_score_diff": max(diffs) if diffs else None, "state": got["state"], "via": got["via"],
                     "status": got["status"]})
    agree = sum(row["label_image"] == row["page"] for row in rows)
    return {"agree": agree, "total": len(rows),
            "max_score_diff": max((row["max_score_diff"] for row in rows if row["max_score_diff"] is not None),
                                  default=None),
            "disagreements": [row for row in rows if row["label_image"] != row["page"]],
            "load_s": shown["load_s"], "seconds_per_photo": shown["seconds_per_photo"], "about": shown["about"],
            "console_errors": shown["console_errors"], "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", type=Path, required=True, help="folder written by --output_tfjs")
    parser.add_argument("--graph", type=Path, required=True, help="the frozen graph of the same run")
    parser.add_argument("--labels", type=Path, required=True, help="its labels file")
    parser.add_argument("--chromium", default="chromium", help="the Chromium binary")
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the page after the last photo")
    parser.add_argument("--min_agree", type=int, help="exit 1 below this many agreeing photos (default: all)")
    parser.add_argument("photos", type=Path, nargs="+")
    args = parser.parse_args(argv)
    summary = check_page(model_dir=args.model_dir, graph=args.graph, labels=args.labels, photos=args.photos,
                         chromium=args.chromium, screenshot=args.screenshot)
    print(json.dumps({key: value for key, value in summary.items() if key != "rows"}, indent=2))
    needed = len(args.photos) if args.min_agree is None else args.min_agree
    return 0 if summary["agree"] >= needed else 1


if __name__ == "__main__":
    sys.exit(main())
