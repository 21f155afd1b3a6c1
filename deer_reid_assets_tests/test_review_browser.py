"""The review app in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, which
.ci/run installs) driven by Selenium, against one uvicorn server on a real embedded PostgreSQL.
Each step checks the database. Screenshots go to $DEER_REID_SCREENSHOTS, else to a temporary folder
(the README's pictures come from a demo database: docs/screenshots/take_screenshots.py)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from deer_reid_assets.core.store import db, migrations
from deer_reid_assets.review_app.app import ReviewConfig, create_app
from deer_reid_assets_tests.review_seed import review_fields, seed

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(pg_server, tmp_path_factory):
    """(base URL, engine, scene ids): one migrated database, one seeded scene, one server for the module."""
    import uvicorn

    url = db.with_database(pg_server, "review_browser")
    db.ensure_database(pg_server, "review_browser")
    engine = db.make_engine(url)
    migrations.migrate(engine)
    store = tmp_path_factory.mktemp("review") / "store"
    ids = seed(engine, store)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(ReviewConfig(engine=engine, store_root=store, reviewer="browser")),
                                        host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", engine, ids
    srv.should_exit = True
    thread.join(timeout=10)
    engine.dispose()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="deer_review_chromium_")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _shot(driver, name: str) -> None:
    folder = Path(os.environ.get("DEER_REID_SCREENSHOTS") or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / f"{name}.png"))


def _until(check, timeout: float = 15.0) -> bool:
    """Poll ``check`` until it holds (a form post and the page after it take a moment on a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except Exception:  # a page mid-navigation: its elements go stale
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _wait_text(driver, element_id: str, text: str) -> None:
    assert _until(lambda: text in driver.find_element("id", element_id).text), \
        f"#{element_id} never said {text!r}: {driver.find_element('id', element_id).text!r}"


def _current(driver) -> str:
    return driver.find_element("id", "detection-crop").get_attribute("src").rsplit("/", 1)[1].removesuffix(".jpg")


def test_review_confirm_new_deer_reassign_undo_and_dashboard(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, engine, ids = server
    browser.get(base + "/queue")
    _shot(browser, "review-queue")
    assert _current(browser) == ids["uncertain"] and browser.find_element(By.ID, "reason").text == "uncertain"
    assert browser.execute_script("return document.getElementById('detection-crop').naturalWidth") == 64

    # confirm with the keyboard shortcut (each action posts a form: wait for the next page, not a fixed time)
    browser.find_element(By.TAG_NAME, "body").send_keys("c")
    _wait_text(browser, "message", "confirm saved")
    assert _until(lambda: review_fields(engine, ids["uncertain"])["deer_id"] == ids["A"])
    assert review_fields(engine, ids["uncertain"])["reviewed_by"] == "browser"

    # the new-animal candidate becomes a new deer
    assert _current(browser) == ids["new"]
    browser.find_element(By.ID, "new-deer-name").send_keys("Split Ear")
    browser.find_element(By.ID, "new-deer").click()
    assert _until(lambda: review_fields(engine, ids["new"])["deer_id"] is not None)
    new_deer = review_fields(engine, ids["new"])["deer_id"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM deer WHERE id::text = :d"), {"d": new_deer}).scalar() == "Split Ear"

    # an audit sample reassigned to deer C through the list
    assert _until(lambda: _current(browser) in (ids["audit1"], ids["audit2"]))
    audit = _current(browser)
    Select(browser.find_element(By.ID, "other-deer")).select_by_visible_text("C (doe)")
    browser.find_element(By.ID, "reassign").click()
    assert _until(lambda: review_fields(engine, audit)["deer_id"] == ids["C"]), review_fields(engine, audit)

    # undo (key u) puts the audit sample back, unreviewed, at the front of the audits
    browser.find_element(By.TAG_NAME, "body").send_keys("u")
    _wait_text(browser, "message", "undid reassign")
    assert _until(lambda: review_fields(engine, audit)["is_reviewed"] is False)

    browser.find_element(By.CSS_SELECTOR, ".candidate a").click()  # the first candidate's deer page
    assert browser.find_element(By.ID, "deer-name").text.endswith("(buck)")
    _shot(browser, "deer")

    browser.get(base + "/dashboard")
    _shot(browser, "dashboard")
    assert browser.find_element(By.ID, "backlog").text == "2"
    assert browser.find_element(By.ID, "assignment-rate").text == "100%"  # all 10: the new one got a new deer
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg rect")) >= 3


def test_merge_two_deer_from_the_deer_page_then_undo(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, engine, ids = server

    def detections_of(deer_id):
        with engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT id::text FROM detections WHERE deer_id::text = :d"),
                                    {"d": deer_id}).scalars())

    b_before, c_before = detections_of(ids["B"]), detections_of(ids["C"])
    assert b_before
    browser.get(f"{base}/deer/{ids['B']}")
    Select(browser.find_element(By.ID, "merge-into")).select_by_visible_text("C (doe)")
    _shot(browser, "deer")
    browser.find_element(By.ID, "merge").click()
    _wait_text(browser, "message", f"merged: {len(b_before)} detections moved here")
    assert browser.find_element(By.ID, "deer-name").text == "C (doe)"
    assert _until(lambda: detections_of(ids["C"]) == b_before | c_before) and not detections_of(ids["B"])
    with engine.connect() as conn:
        merges = conn.execute(sa.text("SELECT action, count(DISTINCT operation_id), count(*) FROM reid_review_corrections "
                                      "WHERE queue_reason = 'merge' GROUP BY 1")).all()
    assert merges == [("reassign", 1, len(b_before))]
    browser.find_element(By.TAG_NAME, "body").send_keys("u")  # one undo puts every detection back
    _wait_text(browser, "message", f"undid merge ({len(b_before)} detections back)")
    assert _until(lambda: detections_of(ids["B"]) == b_before) and detections_of(ids["C"]) == c_before


def test_record_marks_on_the_deer_page_then_undo(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, engine, ids = server

    def marks():
        with engine.connect() as conn:
            pf = conn.execute(sa.text("SELECT physical_features FROM deer WHERE id::text = :d"), {"d": ids["A"]}).scalar()
        return (pf or {}).get("marks")

    browser.get(f"{base}/deer/{ids['A']}")
    Select(browser.find_element(By.ID, "mark-throat_patch")).select_by_visible_text("large")
    Select(browser.find_element(By.ID, "mark-flank_right")).select_by_visible_text("scar")
    Select(browser.find_element(By.ID, "mark-ear_notch_left")).select_by_visible_text("notched")
    browser.find_element(By.ID, "save-marks").click()
    _wait_text(browser, "message", "marks saved: throat patch large, right flank scar, left ear notched")
    _wait_text(browser, "marks-line", "throat patch large, right flank scar, left ear notched")
    assert _until(lambda: marks() and marks()["flank_mark"] == {"right": "scar"})
    assert Select(browser.find_element(By.ID, "mark-flank_right")).first_selected_option.text == "scar"
    browser.find_element(By.TAG_NAME, "body").send_keys("u")
    _wait_text(browser, "message", "undid the marks recorded")
    _wait_text(browser, "marks-line", "nothing recorded")
    assert marks() is None


def test_annotate_antler_keypoints_with_mouse_and_keys(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    base, engine, ids = server
    det = ids["uncertain"]  # its box starts at the photo's corner: crop pixels are photo pixels
    browser.get(f"{base}/antlers/{det}")
    crop = browser.find_element(By.ID, "antler-crop")
    assert _until(lambda: browser.execute_script("return arguments[0].naturalWidth", crop) == 64)
    scale = crop.size["width"] / 64  # offsets are from the element's centre

    def click(x: float, y: float) -> None:
        ActionChains(browser).move_to_element_with_offset(crop, (x - 32) * scale, (y - 32) * scale).click().perform()

    click(16, 48)                                               # left main beam, visible
    click(22, 32)                                               # left brow tine, visible
    browser.find_element(By.TAG_NAME, "body").send_keys("o")    # now placing occluded points
    click(32, 12)                                               # left G2, occluded
    browser.find_element(By.TAG_NAME, "body").send_keys("t")    # the next point (G3) on the other side
    browser.find_element(By.TAG_NAME, "body").send_keys("o")
    click(48, 30)                                               # right G3, visible
    assert browser.find_element(By.ID, "placed-counts").text == "yours: 3L / 1R points"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#antler-overlay circle.placed")) == 4
    _shot(browser, "antlers")
    browser.find_element(By.ID, "save-points").click()
    _wait_text(browser, "message", "saved 4 keypoints")

    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT keypoint_index, x, y, visibility FROM antler_keypoints "
                                    "WHERE detection_id = CAST(:d AS uuid) ORDER BY 1"), {"d": det}).all()
        source = conn.execute(sa.text("SELECT model_version FROM antler_processing_log "
                                      "WHERE detection_id = CAST(:d AS uuid)"), {"d": det}).scalar()
    assert [(i, v) for i, _, _, v in rows] == [(0, 2), (1, 2), (2, 1), (11, 2)] and source == "annotation:review-app"
    for (_, x, y, _), (ex, ey) in zip(rows, [(16, 48), (22, 32), (32, 12), (48, 30)]):
        assert abs(x - ex) <= 1 and abs(y - ey) <= 1, (x, y, ex, ey)
    assert "3+L/1+R" in browser.find_element(By.ID, "stored-counts").text
