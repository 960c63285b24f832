"""The HTML report in a real browser: headless Chromium loads every plot, frame strip and video."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from magihuman.harness import report
from magihuman.harness.sweep import Clip
from magihuman.media import write_mp4
from tests.harness.synthetic import make_record

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Opens index.html in a frame, waits for every <img> and <video> to load or fail, then
# writes the counts into the page, which --dump-dom prints.
CHECK_PAGE = """<!doctype html><html><body><iframe id="report" src="index.html" width="1200" height="800"></iframe>
<pre id="result">pending</pre><script>
const frame = document.getElementById("report");
const settle = (el, ok, events) => ok(el) || el.error ? 0 : new Promise(r => events.forEach(e => el.addEventListener(e, r)));
frame.onload = async () => {
  const doc = frame.contentDocument, images = [...doc.images], videos = [...doc.querySelectorAll("video")];
  await Promise.all(images.map(i => settle(i, x => x.complete, ["load", "error"])));
  await Promise.all(videos.map(v => settle(v, x => x.readyState >= 1, ["loadedmetadata", "error"])));
  document.getElementById("result").textContent = JSON.stringify({
    images: images.length, images_loaded: images.filter(i => i.naturalWidth > 0).length,
    videos: videos.length, videos_loaded: videos.filter(v => v.readyState >= 1 && v.videoWidth > 0).length});
};
</script></body></html>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium; .ci/run installs it)")
def test_browser_loads_every_image_and_video(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for steps in (2, 4):
        frames = rng.integers(0, 255, (9, 64, 96, 3), dtype=np.uint8)
        waveform = (0.1 * rng.standard_normal((2, 44_100 * 9 // 25))).astype(np.float32)
        video = write_mp4(tmp_path / f"media/{steps}.mp4", frames, waveform, sample_rate=44_100)
        clip = Clip(frames, waveform, 44_100).save(tmp_path / f"media/{steps}.npz")
        r = make_record(num_steps=steps)
        records.append(replace(r, artifacts={"video": str(video), "clip": str(clip)}))
    files = report.write_report(records, tmp_path / "report")
    (tmp_path / "report" / "check.html").write_text(CHECK_PAGE)
    page = files.html.read_text()
    assert page.count("<video") == 2 and page.count('class="strip"') == 2

    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=20000", "--dump-dom", (tmp_path / "report" / "check.html").as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1) != "pending", done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["images"] == result["images_loaded"] >= 4, result  # stage plot, pareto plots, 2 strips
    assert result["videos"] == result["videos_loaded"] == 2, result
