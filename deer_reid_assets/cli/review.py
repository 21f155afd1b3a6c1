"""``deer-reid review``: the review web app (review queue, dashboard) on this project's database."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import click

from deer_reid_assets.core.store import db

from .common import engine, fail_cleanly, main


@main.command("review")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token.")
@click.option("--port", default=3001, show_default=True)
@click.option("--token", envvar="DEER_REID_REVIEW_TOKEN", default=None,
              help="Secret every request must carry (required when --host is not loopback). Env: DEER_REID_REVIEW_TOKEN.")
@click.option("--reviewer", default=None, help="Name written on corrections until a reviewer sets one in the page "
              "(default: the OS user).")
@click.option("--store", "store_root", type=click.Path(path_type=Path), default=None,
              help="Image store root (crops are served from STORE/crops only); default $DEER_REID_HOME/store.")
@click.option("--dagster-url", default="http://127.0.0.1:3000", show_default=True, help="Linked from every page.")
@fail_cleanly
def review(host: str, port: int, token: str | None, reviewer: str | None, store_root: Path | None,
           dagster_url: str) -> None:
    """The review app: the review queue (keyboard: c confirm, 1-3 candidate, n new deer, x not a deer,
    s skip, u undo) and the dashboard."""
    import uvicorn

    from deer_reid_assets.core.review.security import required_token
    from deer_reid_assets.review_app.app import ReviewConfig, create_app

    token = required_token(host, token)
    cfg = ReviewConfig(engine=engine(), store_root=(store_root or db.reid_home() / "store").resolve(), token=token,
                       reviewer=reviewer or os.environ.get("USER") or getpass.getuser() or "reviewer",
                       dagster_url=dagster_url)
    link = f"http://{host}:{port}/queue" + (f"?token={token}" if token else "")
    click.echo(f"review app on {link} (Ctrl-C stops it)")
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning")
