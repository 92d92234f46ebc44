"""Drive Debian's chromium headless from a test, with the standard library only (test helper).

``chromium --remote-debugging-pipe`` speaks the Chrome DevTools Protocol over file descriptors 3
(commands in) and 4 (replies and events out), one JSON message per NUL-terminated record; a shell
``exec`` maps the child's stdin/stdout pipes onto them. :class:`Chromium` opens one page, evaluates
JavaScript in it or in one of its frames, and takes screenshots: enough to click through a
single-page app such as Snakemake's HTML report and read what it rendered.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

#: the Debian package's binary (``make browser`` installs it)
BINARY = "chromium"


def find_chromium() -> str | None:
    return shutil.which(BINARY)


class Chromium:
    """One headless browser with one page; use as a context manager."""

    def __init__(self, profile_dir: Path, width: int = 1400, height: int = 900, timeout: float = 60.0):
        exe = find_chromium()
        if exe is None:
            raise FileNotFoundError(f"{BINARY} not found (make browser installs Debian's package)")
        args = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
                "--remote-debugging-pipe", f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", "about:blank"]
        self._proc = subprocess.Popen(["sh", "-c", 'exec "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', "sh", *args],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._timeout, self._next_id, self._buffer, self.events = timeout, 0, b"", []
        try:
            page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
            self._session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            self.send("Page.enable", session=True)
            self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            raise

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.send("Browser.close")
                self._proc.wait(timeout=10)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = self._proc.stdout.read1(1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """One DevTools command (to the page with ``session``); its result, events kept in ``events``."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self._session
        self._proc.stdin.write(json.dumps(msg).encode() + b"\0")
        self._proc.stdin.flush()
        while True:
            reply = self._read_message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self.events.clear()
        self.send("Page.navigate", session=True, url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str, frame_id: str | None = None) -> Any:
        """The JSON value of a JavaScript expression in the page, or in frame ``frame_id``."""
        params: dict[str, Any] = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        if frame_id is not None:
            params["contextId"] = self.send("Page.createIsolatedWorld", session=True, frameId=frame_id)["executionContextId"]
        result = self.send("Runtime.evaluate", session=True, **params)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('exception', {}).get('description', result['exceptionDetails'])}")
        return result["result"].get("value")

    def wait_for(self, expression: str, frame_id: str | None = None) -> Any:
        """Evaluate ``expression`` until it is truthy (the app renders asynchronously)."""
        deadline = time.monotonic() + self._timeout
        while True:
            value = self.evaluate(expression, frame_id)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {self._timeout:g} s for: {expression}")
            time.sleep(0.1)

    def child_frames(self) -> list[dict[str, Any]]:
        """The page's sub-frames (iframes): id, url."""
        tree = self.send("Page.getFrameTree", session=True)["frameTree"]
        return [child["frame"] for child in tree.get("childFrames", [])]

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path
