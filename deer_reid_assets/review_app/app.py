"""Routes of the review app. Handlers parse, call ``core.review`` and render; no SQL here.

Safety: the token (when one is set) is checked on every request (``Authorization: Bearer``, or
``?token=`` once, which sets an HttpOnly cookie); every POST must carry the CSRF cookie's value in
its form (double submit, SameSite=Strict cookie); crops are served by detection id only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from deer_reid_assets.core.antlers.layout import KEYPOINT_NAMES
from deer_reid_assets.core.marks import features as marks_features
from deer_reid_assets.core.marks import records as marks_records
from deer_reid_assets.core.marks import vocabulary as marks_vocabulary
from deer_reid_assets.core.review import (
    actions,
    antler_annotation,
    antler_history,
    dashboard,
    deer_edits,
    queue,
    security,
)
from deer_reid_assets.core.store import review as store

HERE = Path(__file__).parent
CSRF_COOKIE, TOKEN_COOKIE, REVIEWER_COOKIE = "deer_review_csrf", "deer_review_token", "deer_reviewer"


@dataclass
class ReviewConfig:
    engine: sa.Engine
    store_root: Path          # the image store; crops are served from <store_root>/crops only
    token: str | None = None  # required on every request when set
    reviewer: str = "reviewer"
    dagster_url: str | None = None


class _Guard(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):
        cfg: ReviewConfig = request.app.state.cfg
        if cfg.token is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or None
            query = request.query_params.get("token")
            if security.same(query, cfg.token):
                resp = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
                resp.set_cookie(TOKEN_COOKIE, cfg.token, httponly=True, samesite="strict")
                return resp
            if not (security.same(given, cfg.token) or security.same(request.cookies.get(TOKEN_COOKIE), cfg.token)):
                return PlainTextResponse("a valid token is required (open the link the server printed)", 401)
        response = await call_next(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _checked_form(handler):
    """A POST handler that runs only when the form carries the CSRF cookie's value; it gets the form."""
    async def wrapped(request: Request) -> Response:
        form = await request.form()
        if not security.same(form.get("csrf"), request.cookies.get(CSRF_COOKIE)):
            return PlainTextResponse("cross-site request refused (missing or wrong CSRF token)", 403)
        return await handler(request, form)
    return wrapped


def _csrf(request: Request) -> str:
    """The CSRF value for forms; on a first visit a fresh one, set as the cookie by the guard."""
    value = request.cookies.get(CSRF_COOKIE)
    if not value:
        value = request.state.__dict__.setdefault("new_csrf", security.new_secret())
    return value


def _reviewer(request: Request) -> str:
    return request.cookies.get(REVIEWER_COOKIE) or request.app.state.cfg.reviewer


def _render(request: Request, name: str, context: dict, status: int = 200) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    ctx = {"csrf": _csrf(request), "reviewer": _reviewer(request), "dagster_url": cfg.dagster_url,
           "message": request.query_params.get("msg"), **context}
    resp = request.app.state.templates.TemplateResponse(request, name, ctx, status_code=status)
    new = request.state.__dict__.get("new_csrf")
    if new:
        resp.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict")
    return resp


def _back(path: str, msg: str | None = None) -> RedirectResponse:
    from urllib.parse import quote

    return RedirectResponse(path + (f"?msg={quote(msg)}" if msg else ""), status_code=303)


async def queue_page(request: Request) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    with cfg.engine.connect() as conn:
        items = queue.pending(conn)
        item = items[0] if items else None
        ctx = {"item": None, "remaining": len(items)}
        if item is not None:
            sims = {c["deer_id"]: c["similarity"] for c in item.candidates}
            ids = list(sims) if item.proposed_deer_id in sims or not item.proposed_deer_id \
                else [item.proposed_deer_id, *sims]
            summaries = store.deer_summaries(conn, ids)
            cands = [{**summaries[i], "similarity": sims.get(i)} for i in ids if i in summaries]
            ctx.update(item=item, info=store.detection_info(conn, item.detection_id), candidates=cands,
                       proposed=summaries.get(item.proposed_deer_id), all_deer=store.all_deer(conn))
    return _render(request, "queue.html", ctx)


@_checked_form
async def review_action(request: Request, form) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    det = security.valid_id(request.path_params["detection_id"])
    if det is None:
        return _back("/queue", "not a detection id")
    try:
        actions.apply_action(cfg.engine, det, str(form.get("action", "")), reviewer=_reviewer(request),
                             deer_id=security.valid_id(str(form.get("deer_id", ""))),
                             proposed_deer_id=security.valid_id(str(form.get("proposed_deer_id", ""))),
                             queue_reason=str(form.get("queue_reason", ""))[:20] or None,
                             new_deer_name=str(form.get("new_deer_name", "")))
    except actions.ReviewError as exc:
        return _back("/queue", str(exc))
    return _back("/queue", f"{form.get('action')} saved (u undoes it)")


@_checked_form
async def undo(request: Request, form) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    back = _local_path(str(form.get("back", "")))
    try:
        last = actions.undo_last(cfg.engine, _reviewer(request))
    except actions.ReviewError as exc:
        return _back(back, str(exc))
    if last and last.get("action") == "marks":
        return _back(back, "undid the marks recorded (the deer's earlier marks are back)")
    if last and last.get("operation_id"):
        return _back(back, f"undid {last['queue_reason']} ({last['detections']} detections back)")
    return _back(back, f"undid {last['action']}" if last else "nothing to undo")


def _local_path(path: str) -> str:
    """A redirect target from a form: one of this app's pages, else the queue (never another site)."""
    deer_id = security.valid_id(path.removeprefix("/deer/")) if path.startswith("/deer/") else None
    return f"/deer/{deer_id}" if deer_id else "/queue"


@_checked_form
async def merge(request: Request, form) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    here = security.valid_id(request.path_params["deer_id"])
    into = security.valid_id(str(form.get("into", "")))
    if here is None or into is None:
        return _back(f"/deer/{here}" if here else "/queue", "choose the deer to merge into")
    try:
        done = deer_edits.merge_deer(cfg.engine, into, here, reviewer=_reviewer(request))
    except actions.ReviewError as exc:
        return _back(f"/deer/{here}", str(exc))
    return _back(f"/deer/{into}", f"merged: {done['moved']} detections moved here (u undoes it)")


@_checked_form
async def split(request: Request, form) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    here = security.valid_id(request.path_params["deer_id"])
    if here is None:
        return _back("/queue", "not a deer id")
    chosen = [security.valid_id(str(v)) for v in form.getlist("detection_id")]
    if None in chosen:
        return _back(f"/deer/{here}", "not a detection id")
    try:
        done = deer_edits.split_deer(cfg.engine, here, chosen, reviewer=_reviewer(request),
                                     new_name=str(form.get("new_name", "")))
    except actions.ReviewError as exc:
        return _back(f"/deer/{here}", str(exc))
    return _back(f"/deer/{done['deer_id']}", f"split: {done['moved']} detections moved to this new deer (u undoes it)")


@_checked_form
async def set_reviewer(request: Request, form) -> Response:
    name = str(form.get("reviewer", "")).strip()[:100]
    resp = _back("/queue", f"reviewing as {name}" if name else "a reviewer name is required")
    if name:
        resp.set_cookie(REVIEWER_COOKIE, name, httponly=True, samesite="strict")
    return resp


async def crop(request: Request) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    det = security.valid_id(request.path_params["detection_id"])
    if det is None:
        return PlainTextResponse("not a detection id", 404)
    with cfg.engine.connect() as conn:
        path = security.crop_inside(cfg.store_root, store.crop_file(conn, det))
    if path is None:
        return PlainTextResponse("no crop for this detection", 404)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


async def dashboard_page(request: Request) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    with cfg.engine.connect() as conn:
        d = dashboard.compute(conn)
    weeks = dashboard.bar_svg([(w[5:], float(n)) for w, n in d.corrections_per_week], title="corrections per week")
    status = dashboard.bar_svg([("assigned", d.assigned), ("unassigned", d.valid_detections - d.assigned),
                                ("backlog", d.backlog), ("reviewed", d.reviewed)], title="detections")
    rank1 = dashboard.bar_svg([(e["when"][5:10], round(100 * (e["rank1"] or 0), 1)) for e in d.evaluations],
                              title="rank-1 (%) per evaluation run")
    bucks = dashboard.bar_svg([(e["when"][5:10], round(100 * e["buck_misid_rate"], 1)) for e in d.evaluations
                               if e["buck_misid_rate"] is not None],
                              title="buck misidentification (%) of the test queries per evaluation run")
    return _render(request, "dashboard.html", {"d": d, "pct": dashboard.percent, "weeks_svg": weeks,
                                               "status_svg": status, "rank1_svg": rank1, "bucks_svg": bucks})


async def deer_page(request: Request) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    deer_id = security.valid_id(request.path_params["deer_id"])
    with cfg.engine.connect() as conn:
        deer = store.deer_page(conn, deer_id) if deer_id else None
        others = [d for d in store.all_deer(conn) if d["deer_id"] != deer_id]
        antlers = antler_history.deer_history(conn, deer_id) if deer else []
        marks = marks_features.page(conn, deer_id) if deer else None
    if deer is None:
        return PlainTextResponse("no such deer", 404)
    return _render(request, "deer.html", {"deer": deer, "others": others, "antlers": antlers, "marks": marks})


@_checked_form
async def marks_save(request: Request, form) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    here = security.valid_id(request.path_params["deer_id"])
    if here is None:
        return _back("/queue", "not a deer id")
    values = {f: str(form.get(f, "")) for f in marks_vocabulary.FIELDS}
    try:
        saved = marks_records.record(cfg.engine, here, values, reviewer=_reviewer(request))
    except marks_vocabulary.MarkError as exc:
        return _back(f"/deer/{here}", str(exc))
    if saved.record_id is None:
        return _back(f"/deer/{here}", "marks unchanged: nothing recorded")
    return _back(f"/deer/{here}", f"marks saved: {marks_vocabulary.describe(saved.marks)} (u undoes it)")


async def antler_list(request: Request) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    with cfg.engine.connect() as conn:
        items = antler_annotation.worklist(conn)
    return _render(request, "antler_list.html", {"items": items})


async def antler_page(request: Request) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    det = security.valid_id(request.path_params["detection_id"])
    try:
        with cfg.engine.connect() as conn:
            page = antler_annotation.page(conn, det) if det else None
    except actions.ReviewError as exc:
        return PlainTextResponse(str(exc), 422)
    if page is None:
        return PlainTextResponse("no crop for this detection", 404)
    scale = min(6.0, 480 / max(page.width, page.height, 1))  # small crops enlarged, large ones fit the page
    data = {"width": page.width, "height": page.height, "points": page.points, "names": list(KEYPOINT_NAMES)}
    return _render(request, "antlers.html", {"p": page, "names": KEYPOINT_NAMES, "data": data,
                                             "display_width": round(page.width * scale)})


@_checked_form
async def antler_save(request: Request, form) -> Response:
    cfg: ReviewConfig = request.app.state.cfg
    det = security.valid_id(request.path_params["detection_id"])
    if det is None:
        return _back("/antlers", "not a detection id")
    try:
        if form.get("action") == "accept":
            page = antler_annotation.accept(cfg.engine, det, reviewer=_reviewer(request))
        else:
            page = antler_annotation.save(cfg.engine, det, str(form.get("points", "[]")), reviewer=_reviewer(request))
    except (actions.ReviewError, ValueError) as exc:
        return _back(f"/antlers/{det}", str(exc))
    return _back(f"/antlers/{det}", f"saved {len(page.points)} keypoints: {page.counts}")


def create_app(cfg: ReviewConfig) -> Starlette:
    app = Starlette(routes=[
        Route("/", lambda r: RedirectResponse("/queue", status_code=303)),
        Route("/queue", queue_page),
        Route("/review/{detection_id}", review_action, methods=["POST"]),
        Route("/undo", undo, methods=["POST"]),
        Route("/reviewer", set_reviewer, methods=["POST"]),
        Route("/crop/{detection_id}.jpg", crop),
        Route("/dashboard", dashboard_page),
        Route("/antlers", antler_list),
        Route("/antlers/{detection_id}", antler_page),
        Route("/antlers/{detection_id}", antler_save, methods=["POST"]),
        Route("/deer/{deer_id}", deer_page),
        Route("/deer/{deer_id}/merge", merge, methods=["POST"]),
        Route("/deer/{deer_id}/split", split, methods=["POST"]),
        Route("/deer/{deer_id}/marks", marks_save, methods=["POST"]),
        Route("/healthz", lambda r: PlainTextResponse("ok")),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ], middleware=[Middleware(_Guard)])
    app.state.cfg = cfg
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    return app
