#!/usr/bin/env python
"""Render a fermetric HTML report in headless Chromium: screenshot it and fail on broken images
or script errors.

    python scripts/render_report.py report.html [--screenshot out.png] [--width 1400] [--height 3000]

Two renders:
1. the report as it is, to a PNG screenshot (look at it);
2. a test-only copy with a tiny inline checker that runs after the load event: it marks every
   <img> that did not decode (not complete or naturalWidth == 0) and records any script error
   (window "error" events, caught in the capture phase so failed image loads count too); the
   DOM Chromium dumps after load is then searched for those marks. Console messages Chromium
   logs at "ERROR"/"Uncaught" level (--enable-logging=stderr) also count as script errors.

Also checked without a browser: the page references nothing outside itself (every <img> is a
data: URI; no <script>, <link>, <iframe>, url(...) or @import in the report).

Exit codes: 0 all good; 1 a broken image, a script error, or an external reference;
2 chromium not found or it failed to run.
"""
from __future__ import annotations

import argparse
import html.parser
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKER = """<script>
(function () {
  window.__fmErrors = [];
  window.addEventListener('error', function (ev) {
    var t = ev.target;
    var what = (t && t.tagName) ? ('failed to load <' + t.tagName.toLowerCase() + '>') : (ev.message || 'error');
    window.__fmErrors.push(what);
  }, true);
  window.addEventListener('load', function () {
    var imgs = document.images, broken = 0;
    for (var i = 0; i < imgs.length; i++) {
      if (!imgs[i].complete || imgs[i].naturalWidth === 0) { imgs[i].setAttribute('data-fm-broken', '1'); broken++; }
    }
    var out = document.createElement('pre');
    out.id = 'fm-check';
    out.textContent = 'FMCHECK images=' + imgs.length + ' broken=' + broken + ' errors=' + JSON.stringify(window.__fmErrors);
    document.body.appendChild(out);
  });
})();
</script>"""

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

BASE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
]


class _Refs(html.parser.HTMLParser):
    """Collects references to anything outside the page."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "link", "iframe", "object", "embed", "base"):
            self.problems.append(f"<{tag}> element")
        if tag == "img":
            self.images += 1
            src = a.get("src") or ""
            if not src.startswith("data:image/"):
                self.problems.append(f"<img src={src[:60]!r}> is not an embedded data URI")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...> event handler")
            if name in ("href",) and value and not value.startswith("#"):
                self.problems.append(f"<{tag} href={value[:60]!r}> points outside the page")


def static_check(text: str) -> tuple[int, list[str]]:
    """(number of <img>, problems): external references found without a browser."""
    p = _Refs()
    p.feed(text)
    problems = list(p.problems)
    for m in re.finditer(r"<style[^>]*>(.*?)</style>", text, flags=re.S | re.I):
        if re.search(r"url\(|@import", m.group(1), flags=re.I):
            problems.append("the inline CSS loads a resource (url(...) or @import)")
    return p.images, problems


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="fm-chromium-") as profile:
        cmd = [browser, *BASE_FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


CONSOLE_ERROR = re.compile(r"(Uncaught|CONSOLE\(\d+\).*(error|Error))")


def check_report(report: Path, screenshot: Path | None, width: int, height: int, timeout: float) -> int:
    text = report.read_text(encoding="utf-8")
    n_img, problems = static_check(text)
    browser = find_browser()
    if browser is None:
        print("error: no chromium / chrome on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        r = _run(browser, [f"--screenshot={screenshot.resolve()}", f"--window-size={width},{height}",
                           report.resolve().as_uri()], timeout)
        if r.returncode != 0 or not screenshot.is_file():
            print(f"error: chromium could not screenshot {report} (exit {r.returncode}):\n{r.stderr[-2000:]}", file=sys.stderr)
            return 2
    # The test-only copy lives next to nothing: a temporary folder, so the report stays script-free.
    with tempfile.TemporaryDirectory(prefix="fm-check-") as tmp:
        copy = Path(tmp) / "check.html"
        head = re.search(r"<head[^>]*>", text, flags=re.I)
        pos = head.end() if head else 0
        copy.write_text(text[:pos] + CHECKER + text[pos:], encoding="utf-8")
        r = _run(browser, ["--dump-dom", "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0",
                           copy.as_uri()], timeout)
    dom = r.stdout
    m = re.search(r"FMCHECK images=(\d+) broken=(\d+) errors=(\[.*?\])</pre>", dom, flags=re.S)
    if r.returncode != 0 or m is None:
        print(f"error: chromium did not run the check (exit {r.returncode}):\n{r.stderr[-2000:]}", file=sys.stderr)
        return 2
    seen, broken, errors = int(m.group(1)), int(m.group(2)), m.group(3)
    console = [line for line in r.stderr.splitlines() if CONSOLE_ERROR.search(line)]
    if broken:
        alts = re.findall(r'<img[^>]*data-fm-broken="1"[^>]*>', dom)
        names = [re.search(r'alt="([^"]*)"', a) for a in alts]
        problems.append(f"{broken} broken image(s): " + ", ".join(n.group(1) if n else "?" for n in names))
    if errors != "[]":
        problems.append(f"script/load errors: {errors}")
    if console:
        problems.append("console errors:\n  " + "\n  ".join(console[:10]))
    if seen != n_img:
        problems.append(f"the browser saw {seen} images but the HTML has {n_img}")
    print(f"{report}: {seen} images rendered, {broken} broken; {len(problems)} problem(s)")
    for p in problems:
        print(f"  - {p}")
    if screenshot is not None:
        print(f"  {screenshot}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--screenshot", type=Path, default=None, help="Write a PNG screenshot here.")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--timeout", type=float, default=120.0, help="Seconds per chromium run.")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"error: {args.report} does not exist", file=sys.stderr)
        return 2
    try:
        return check_report(args.report, args.screenshot, args.width, args.height, args.timeout)
    except subprocess.TimeoutExpired:
        print(f"error: chromium took more than {args.timeout:.0f} s", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
