"""report.html: one self-contained page per evaluation — every card and figure rendered by a real browser
(headless Chromium, network off, no console error, a screenshot that is not blank), every text escaped."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import explained_records

import report_interface

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_BROWSER = "Chromium is not installed here (apt-get install chromium; .ci/run installs it): the page is not " \
             "rendered in a browser"
OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--proxy-server=127.0.0.1:9",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0"]
RECORDS = ["E07500", "E07501", "E07502", "E07503"]


def browse(page: Path, *extra: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip(NO_BROWSER)
    return subprocess.run([CHROMIUM, *OFFLINE, *extra, page.resolve().as_uri()], capture_output=True, text=True,
                          timeout=120)


def console_errors(stderr: str) -> list[str]:
    """The page's own console messages and blocked requests (the browser's start-up noise — D-Bus, GPU — aside)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Refused" in line or "Uncaught" in line
            or "ERR_" in line]


@pytest.fixture(scope="module")
def explained_report(modern_cv_run, cinc, tmp_path_factory):
    """Predictions with intervals and explanations of four CinC records, and the report of them."""
    tmp, run = modern_cv_run
    folder = tmp_path_factory.mktemp("page")
    records = explained_records(folder, cinc, RECORDS, run, tmp / "cache")
    assert report_interface.entry(["--predictions", str(folder / "pred.csv"), "--labels", str(records),
                                   "--explanations", str(folder / "explain"), "--out", str(folder / "report"),
                                   "--quiet"]) == 0
    return folder / "report" / "report.html"


def test_the_page_is_self_contained(explained_report):
    html = explained_report.read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # every figure embedded, every link inside the page
    assert html.count('<article class="card"') == len(RECORDS)
    assert html.count("data:image/png;base64,") == len(RECORDS) + 4  # 4 cohort figures with intervals, 4 ECGs
    assert "default-src 'none'" in html and "trained on" in html and "calibrated on" in html
    for name in RECORDS:
        assert 'href="#ecg-' in html and f">{name}</a>" in html


def test_a_real_browser_renders_every_card_and_figure_offline(explained_report, tmp_path):
    done = browse(explained_report, "--virtual-time-budget=5000", "--dump-dom")
    dom = done.stdout
    assert done.returncode == 0 and dom.count('<article class="card"') == len(RECORDS)
    assert dom.count("<img ") == len(RECORDS) + 4 and dom.count("<svg") == len(RECORDS)
    assert f"{len(RECORDS)} of {len(RECORDS)} shown" in dom  # the page's script ran (filter and count)
    assert console_errors(done.stderr) == []
    shot = tmp_path / "page.png"
    done = browse(explained_report, "--window-size=1200,1800", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.stat().st_size > 10_000
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # not blank


def test_every_text_is_escaped_and_a_page_without_explanations_lists_the_predictions(tmp_path):
    hostile = "<script>alert(1)</script>"
    ids = [hostile, "a&b", "plain"]
    pd.DataFrame({"ids": ids, "predicted_age": [50.0, 61.0, 70.5]}).to_csv(tmp_path / "pred.csv", index=False)
    pd.DataFrame({"id": ids, "age": [48, 66, 71]}).to_csv(tmp_path / "labels.csv", index=False)
    assert report_interface.entry(["--predictions", str(tmp_path / "pred.csv"), "--labels",
                                   str(tmp_path / "labels.csv"), "--id_col", "id", "--age_col", "age", "--out",
                                   str(tmp_path / "out"), "--quiet"]) == 0
    page = tmp_path / "out" / "report.html"
    html = page.read_text()
    assert hostile not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a&amp;b" in html
    assert html.count("<script>") == 1 and '<article class="card"' not in html  # ours only; no cards
    assert "not recorded (no notes file" in html
    done = browse(page, "--virtual-time-budget=3000", "--dump-dom")
    assert "3 of 3 shown" in done.stdout and console_errors(done.stderr) == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in done.stdout  # shown as text in the rendered table
