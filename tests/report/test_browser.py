"""The report page rendered by a real headless browser (chromium): every image loads, the page is not blank."""

import shutil
import subprocess

import numpy as np
import pytest

from relabel.report import make_report
from relabel.run.clusters import ClusterOptions
from relabel.run.pipeline import run_catalog

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: .ci/run installs it")
BROWSER = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars"]
# Marks <body data-images="N:M">: N images on the page, M of them decoded with a real width.
PROBE = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
         "document.body.setAttribute('data-images',i.length+':'+i.filter(x=>x.complete&&x.naturalWidth>0).length)})"
         "</script>")


@pytest.fixture(scope="module")
def report_page(small_survey, small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "out"
    run_catalog(small_survey.catalog, small_model, out, workflow=small_survey.workflow,
                cluster=ClusterOptions(kind="none"), progress=False, echo=lambda line: None)
    numbers = make_report(out, truth=small_survey.truth, report_dir=out.parent / "report")
    return out.parent / "report" / "report.html", numbers


def _png_pixels(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))


@needs_chromium
def test_every_image_of_the_report_loads_in_a_browser(report_page, tmp_path):
    page, numbers = report_page
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([*BROWSER, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    n = len(numbers["figures"])
    assert n == 6
    assert f'data-images="{n}:{n}"' in dom, dom[:300]


@needs_chromium
def test_report_screenshot_is_not_a_blank_page(report_page, tmp_path):
    page, _ = report_page
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>")
    shots = {}
    for name, url in (("report", page.as_uri()), ("blank", blank.as_uri())):
        shot = tmp_path / f"{name}.png"
        subprocess.run([*BROWSER, "--window-size=1200,1600", f"--screenshot={shot}", url], capture_output=True,
                       timeout=120, check=True)
        shots[name] = _png_pixels(shot)
    report, blank_pixels = shots["report"], shots["blank"]
    assert report.shape == blank_pixels.shape and report.shape[:2] == (1600, 1200)
    changed = np.abs(report[..., :3] - blank_pixels[..., :3]).max(axis=-1) > 0.1
    assert changed.mean() > 0.03, "the page drew text, tables and figures, not an empty page"
