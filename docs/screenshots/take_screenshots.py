"""Refresh the review app's screenshots in docs/screenshots/ from a demo database (a script, not a test).

    DEER_REID_HOME=/tmp/demo deer-reid demo --images 150 --bucks 8 --does 4 --weights random --image-size 96 --no-train
    DEER_REID_HOME=/tmp/demo python docs/screenshots/take_screenshots.py

It serves the review app on the demo's database (embedded PostgreSQL under $DEER_REID_HOME) and drives
Debian's headless chromium through Selenium: the queue (one confirm with the `c` key), a deer page,
an antler annotation (four clicks) and the dashboard. It writes to that demo database.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent


def _server(engine, store: Path):
    import uvicorn

    from deer_reid_assets.review_app.app import ReviewConfig, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(ReviewConfig(engine=engine, store_root=store, reviewer="demo")),
                                        host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    return srv, f"http://127.0.0.1:{port}"


def main() -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from deer_reid_assets.core.store import db

    engine = db.make_engine(db.database_url())
    srv, base = _server(engine, db.reid_home() / "store")
    profile = tempfile.mkdtemp(prefix="deer_review_shots_")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.implicitly_wait(5)
    try:
        driver.get(base + "/queue")
        driver.save_screenshot(str(OUT / "review-queue.png"))
        deer_link = driver.find_element(By.CSS_SELECTOR, ".candidate a").get_attribute("href")
        driver.find_element(By.TAG_NAME, "body").send_keys("c")
        time.sleep(1.5)
        driver.get(deer_link)
        driver.save_screenshot(str(OUT / "deer.png"))
        driver.get(base + "/antlers")
        driver.find_element(By.CSS_SELECTOR, "#antler-worklist a").click()
        crop = driver.find_element(By.ID, "antler-crop")
        w, h = crop.size["width"], crop.size["height"]
        for fx, fy in ((0.22, -0.3), (0.26, -0.38), (0.3, -0.44), (0.36, -0.47)):  # beam, brow, G2, G3
            ActionChains(driver).move_to_element_with_offset(crop, fx * w, fy * h).click().perform()
        driver.save_screenshot(str(OUT / "antlers.png"))
        driver.get(base + "/dashboard")
        driver.save_screenshot(str(OUT / "dashboard.png"))
    finally:
        driver.quit()
        srv.should_exit = True
        shutil.rmtree(profile, ignore_errors=True)
    print(f"screenshots written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
