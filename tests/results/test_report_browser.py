"""The HTML report as a person sees it: opened in headless Chromium, screenshotted, every image
decoded by the browser itself, and no script error logged."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from synthetic import make_synthetic_run

from cnnsearch.results import write_report

BROWSER = next(
    (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None
)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium here (apt-get install chromium; .ci/run does)")

# Appended to a copy of the report: once everything has loaded, count the images the browser decoded.
CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const decoded = images.filter((image) => image.complete && image.naturalWidth > 0).length;
  document.body.setAttribute("data-images", `${decoded}/${images.length}`);
});
</script>"""


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    common = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
              f"--user-data-dir={cwd / 'profile'}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]  # fmt: skip
    assert BROWSER is not None
    return subprocess.run([BROWSER, *common, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("multi_objective", [False, True], ids=["accuracy", "pareto"])
def test_report_renders_in_a_browser_with_every_image_decoded(multi_objective: bool, tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path / "runs", "shown", 60, seed=4, multi_objective=multi_objective)
    report = write_report(run)
    expected = len(re.findall(r"<img ", report.read_text()))
    assert expected >= 4, "the report should carry its plots"

    shot = tmp_path / "report.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri(), cwd=tmp_path)
    assert shot.is_file(), done.stderr[-2000:]
    assert not re.search(r"Uncaught|CONSOLE.*(Error|error)", done.stderr), done.stderr[-2000:]
    with Image.open(shot) as image:
        picture = image.convert("L")
        assert picture.size == (1200, 3000)
        low, high = picture.getextrema()
        assert high - low > 100, "the screenshot is blank"

    checked = tmp_path / "checked.html"
    checked.write_text(report.read_text().replace("</body>", CHECK + "</body>"))
    dom = _chromium("--dump-dom", checked.as_uri(), cwd=tmp_path)
    found = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    assert (int(found.group(1)), int(found.group(2))) == (expected, expected), "an image did not decode"
    for png in sorted((run.path / "report").glob("*.png")):  # the copies beside the report, too
        with Image.open(io.BytesIO(png.read_bytes())) as image:
            image.verify()
