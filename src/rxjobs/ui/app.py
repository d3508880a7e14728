"""The web application: routes, templates and JSON endpoints over the job services.

:func:`create_app` builds a Starlette application for one share dir from
:class:`JobsPage`, whose methods are the routes and whose attributes hold the
share dir, the secrets and the templates.  Pages
are rendered on the server with Jinja2 (autoescaping on: everything read from
a share dir is hostile), and a little JavaScript of our own (``static/``)
refreshes them.  The JSON endpoints return what the CLI's ``--json``
prints; docs/ui.md lists them.  A GET never changes anything; cancel and
cleanup are POSTs that need the CSRF token when a browser sends them, and
the page's cancel is confirmed first and answered by a redirect to a GET.
"""

from __future__ import annotations

import importlib.metadata
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import jinja2
from rich.filesize import decimal as human_bytes
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from .. import jobs
from ..errors import JobNotFoundError, NotAShareDirError, UnsafeShareDirError
from ..ids import is_job_id
from ..retention import RetentionPolicy
from ..store import Store, open_store
from ..times import utc_now
from . import plans, views
from .prefix import PrefixMiddleware, check_prefix
from .preview import preview_results
from .security import CSRF_FIELD, AccessMiddleware, Secrets, check_csrf, refused, wants_json

HERE = Path(__file__).parent


def _version() -> str:
    try:
        return importlib.metadata.version("rxjobs")
    except importlib.metadata.PackageNotFoundError:
        return "?"


T = TypeVar("T")

NO_SUCH_PLAN = ("no such cleanup preview (a preview lasts 30 minutes and belongs to the browser "
                "session that made it): preview again")

NOTICES = {  # what a redirect after an action says; keys only, so no text is reflected
    "canceled": "The job was canceled.",
    "not-canceled": "The job had already ended: nothing to cancel.",
}


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """``when`` as "3 h ago" (coarse, for a table)."""
    if when is None:
        return ""
    seconds = ((now or utc_now()) - when).total_seconds()
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def local_time(when: datetime | None) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when is not None else ""


def iso(when: datetime | None) -> str:
    return when.isoformat() if when is not None else ""


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(bytes=lambda n: human_bytes(int(n or 0)), ago=ago, local_time=local_time, iso=iso)
    return Jinja2Templates(env=env)


class ShareDirApp:
    """The share dir a server shows, opened afresh for each request."""

    def __init__(self, share_dir: str, options: dict[str, Any] | None) -> None:
        self.url = open_store(share_dir, options).url
        self.options = options

    async def run(self, work: Callable[[Store], T]) -> T:
        """Run ``work(store)`` in a worker thread (the services block on the disk)."""
        return await run_in_threadpool(self.call, work)

    def call(self, work: Callable[[Store], T]) -> T:
        """Run ``work(store)`` in this thread, on the share dir opened afresh."""
        store = open_store(self.url, self.options)
        try:
            return work(store)
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()


class JobsPage:
    """The web page of one share dir: its routes are methods, its state attributes.

    One object per served share dir, as Ray's job dashboard keeps its state in
    its head module: the share dir (:class:`ShareDirApp`), the secrets that
    guard it, the templates and the path prefix.  :meth:`asgi` wraps it in
    Starlette with the security middleware.

    Parameters
    ----------
    share_dir, options, token, port, prefix
        As :func:`create_app`.
    """

    def __init__(self, share_dir: str, options: dict[str, Any] | None, token: str, port: int,
                 prefix: str) -> None:
        if not token:
            raise ValueError("the web page needs a secret token")
        self.prefix = check_prefix(prefix)
        self.share = ShareDirApp(share_dir, options)
        self.secrets = Secrets(token, port, self.prefix)
        self.templates = _templates()
        self.templates.env.globals["base"] = self.prefix
        self.book = plans.PlanBook()
        self.catalog = views.JobCatalog()

    # -- answers -------------------------------------------------------------------------

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """Render template ``name`` with what every page shows."""
        context.update(share_dir=self.share.url, csrf_token=self.secrets.csrf_token,
                       csrf_field=CSRF_FIELD, version=_version(), now=utc_now(),
                       nav=context.get("nav", ""))
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def error(self, request: Request, status: int, message: str) -> Response:
        """An error page, or ``{"error": message}`` for a client that wants JSON."""
        if wants_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return self.page(request, "error.html", status, message=message, title=f"Error {status}")

    def not_found(self, request: Request, job_id: str) -> Response:
        return self.error(request, 404, f"no job {job_id!r} in {self.share.url}")

    async def guarded(self, request: Request, handler: Callable[[], Any]) -> Response:
        """Run ``handler``; a bad query, a refused share dir or an unknown job become error answers."""
        try:
            return await handler()
        except views.BadQuery as exc:
            return self.error(request, 400, str(exc))
        except (NotAShareDirError, UnsafeShareDirError, PermissionError) as exc:
            return self.error(request, 403, str(exc))
        except JobNotFoundError as exc:
            return self.error(request, 404, str(exc))

    # -- jobs ----------------------------------------------------------------------------

    async def jobs_html(self, request: Request) -> Response:
        async def handler() -> Response:
            query = views.JobsQuery.from_params(request.query_params)
            result = await self.share.run(lambda store: views.jobs_page(store, query, self.catalog))
            fragment = request.headers.get("x-fragment") == "rows"
            return self.page(request, "_rows.html" if fragment else "jobs.html", result=result,
                             rows_version=views.rows_version(result),
                             query=query, states=views.STATES, sorts=views.SORTS, nav="jobs",
                             url_for_query=lambda **changes: f"{self.prefix}/jobs?"
                             + urlencode(query.params(**changes)))
        return await self.guarded(request, handler)

    async def jobs_json(self, request: Request) -> Response:
        async def handler() -> Response:
            query = views.JobsQuery.from_params(request.query_params)
            result = await self.share.run(lambda store: views.jobs_page(store, query, self.catalog))
            return JSONResponse([row.to_json() for row in result.rows], headers={
                "X-Total-Count": str(result.total), "X-Page": str(query.page),
                "X-Per-Page": str(query.per_page)})
        return await self.guarded(request, handler)

    async def rows_json(self, request: Request) -> Response:
        """What the jobs table's refresh needs of its page (``GET /api/rows``), with an ETag.

        The page sends back the version it shows (``If-None-Match``): an
        unchanged page is a bodiless 304, a changed one says each row's
        cells, for the script to update them in place.
        """
        async def handler() -> Response:
            query = views.JobsQuery.from_params(request.query_params)
            result = await self.share.run(lambda store: views.jobs_page(store, query, self.catalog))
            version = views.rows_version(result)
            headers = {"ETag": version, "Cache-Control": "no-store"}
            if request.headers.get("if-none-match") == version:
                return Response(status_code=304, headers=headers)
            return JSONResponse(views.rows_json(result, version), headers=headers)
        return await self.guarded(request, handler)

    async def status_json(self, request: Request) -> Response:
        async def handler() -> Response:
            ids = request.query_params.getlist("job_id")
            if not ids:
                raise views.BadQuery("name jobs: /api/status?job_id=ID&job_id=ID...")
            if len(ids) > views.MAX_PER_PAGE:
                raise views.BadQuery(f"at most {views.MAX_PER_PAGE} jobs at a time")
            return JSONResponse(await self.share.run(lambda store: _states(store, ids)))
        return await self.guarded(request, handler)

    # -- one job -------------------------------------------------------------------------

    async def job_html(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not is_job_id(job_id):
            return self.not_found(request, job_id)

        async def handler() -> Response:
            detail = await self.share.run(lambda store: views.job_detail(store, job_id))
            if detail is None:
                return self.not_found(request, job_id)
            output, cut = await self.share.run(
                lambda store: views.output_tail(jobs.read_output(store, job_id)))
            downloads = await self.share.run(lambda store: views.job_downloads(store, job_id))
            preview = None
            if views.is_on(request.query_params.get("preview")):
                preview = await run_in_threadpool(preview_results, self.share.url, self.share.options,
                                                  job_id)
            notice = NOTICES.get(request.query_params.get("notice", ""))
            return self.page(request, "job.html", job=detail, output=output, output_cut=cut,
                             downloads=downloads,
                             preview=preview, notice=notice, nav="jobs")
        return await self.guarded(request, handler)

    async def output_text(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not is_job_id(job_id):
            return self.not_found(request, job_id)

        async def handler() -> Response:
            text = await self.share.run(lambda store: jobs.read_output(store, job_id))
            return PlainTextResponse(text)
        return await self.guarded(request, handler)

    async def download(self, request: Request) -> Response:
        """One of a job's own files as an attachment (``GET /jobs/ID/download/NAME``).

        NAME is ``output.txt`` (the whole console output), ``task-N.out`` or
        ``task-N.result.pkl`` (:func:`views.parse_download`); anything else,
        and any file the job does not have, is a 404.
        """
        job_id = request.path_params["job_id"]
        wanted = views.parse_download(request.path_params["name"])
        if not is_job_id(job_id) or wanted is None:
            return self.error(request, 404, "no such file of a job: the job's page lists its files")

        async def handler() -> Response:
            if not await self.share.run(lambda store: store.is_job_dir(job_id)):
                return self.not_found(request, job_id)
            try:
                data = await self.share.run(lambda store: views.read_download(store, job_id, wanted))
            except ValueError:  # not a regular file, or beyond the size limit
                data = None
            if data is None:
                return self.error(request, 404, f"job {job_id} has no {wanted.name}")
            return Response(data, media_type=wanted.media_type, headers={
                "Content-Disposition": f'attachment; filename="{wanted.filename(job_id)}"',
                "X-Content-Type-Options": "nosniff"})
        return await self.guarded(request, handler)

    async def preview_json(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not is_job_id(job_id):
            return self.not_found(request, job_id)
        found = await self.share.run(lambda store: store.is_job_dir(job_id))
        if not found:
            return self.not_found(request, job_id)
        answer = await run_in_threadpool(preview_results, self.share.url, self.share.options, job_id)
        return JSONResponse(answer, status_code=200 if "error" not in answer else 409)

    async def cancel_page(self, request: Request) -> Response:
        """The confirmation a cancel asks for (``GET /jobs/ID/cancel``): it changes nothing."""
        job_id = request.path_params["job_id"]
        if not is_job_id(job_id):
            return self.not_found(request, job_id)

        async def handler() -> Response:
            detail = await self.share.run(lambda store: views.job_detail(store, job_id))
            if detail is None:
                return self.not_found(request, job_id)
            return self.page(request, "cancel.html", job=detail, nav="jobs", title=f"Cancel {job_id}?")
        return await self.guarded(request, handler)

    async def cancel(self, request: Request) -> Response:
        """Cancel a job (a POST), then redirect to its page (POST-redirect-GET: a reload
        repeats nothing).  The page's form must carry ``confirm`` (it comes from
        :meth:`cancel_page`); without it the browser is sent to that confirmation."""
        job_id = request.path_params["job_id"]
        form = await request.form()
        refusal = check_csrf(request, _text(form.get(CSRF_FIELD)))
        if refusal is not None:
            return refusal
        if not is_job_id(job_id):
            return self.not_found(request, job_id)
        from_api = request.url.path.startswith("/api/")
        if not from_api and not views.is_on(form.get("confirm")):
            return RedirectResponse(f"/jobs/{job_id}/cancel", status_code=303)

        async def handler() -> Response:
            canceled = await self.share.run(lambda store: jobs.cancel_job(store, job_id))
            state = await self.share.run(lambda store: jobs.job_status(store, job_id).status.value)
            if from_api:
                return JSONResponse({"job_id": job_id, "canceled": canceled, "state": state})
            notice = "canceled" if canceled else "not-canceled"
            return RedirectResponse(f"/jobs/{job_id}?notice={notice}", status_code=303)
        return await self.guarded(request, handler)

    # -- disk use and cleanup ------------------------------------------------------------------

    async def usage_html(self, request: Request) -> Response:
        async def handler() -> Response:
            params = request.query_params
            policy = views.policy_from_params(params, params.getlist("state"))
            top = views.int_param(params, "top", 10, 0, 1000)
            view = await self.share.run(lambda store: views.usage_view(store, policy, top))
            if request.url.path.startswith("/api/"):
                return JSONResponse(view.report.to_json())
            return self.page(request, "usage.html", view=view, params=params, states=views.STATES,
                             policy_query=urlencode([(k, v) for k, v in params.multi_items()
                                                     if k != "top"]), nav="usage")
        return await self.guarded(request, handler)

    # -- cleanup plans (ui/plans.py): preview, plan page, confirm, result ---------------------

    def session_of(self, request: Request) -> tuple[str, bool]:
        """The browser session a request comes from, and whether it is new (give it the cookie).

        A script let in by the token itself, with no session cookie, is the
        session ``token``: whoever holds the token.
        """
        given = request.cookies.get(self.session_cookie, "")
        if plans.is_session_id(given):
            return given, False
        if request.scope.get("state", {}).get("csrf_exempt"):
            return "token", False
        return plans.new_session_id(), True

    @property
    def session_cookie(self) -> str:
        return f"{self.secrets.cookie_name}-session"

    def with_session(self, response: Response, session: str, new: bool) -> Response:
        if new:
            response.set_cookie(self.session_cookie, session, httponly=True, samesite="strict",
                                path=self.secrets.cookie_path)
        return response

    def start_plan(self, session: str, params: Any, job_ids: list[str], states: list[str],
                   again: str) -> plans.Plan:
        """Check what a preview asks for, then make its plan in a background thread."""
        ids, policy = _asked_cleanup(params, job_ids, states)
        plan = self.book.new_plan(session, self.share.url, policy.force, plans.describe(ids, policy), again)

        def make() -> None:
            try:
                made = self.share.call(lambda store: plans.plan_jobs(store, ids, policy))
            except Exception as exc:  # the plan page says what went wrong
                self.book.finish(plan, None, f"{type(exc).__name__}: {exc}")
            else:
                self.book.finish(plan, made)

        threading.Thread(target=make, name=f"rxjobs-plan-{plan.plan_id[:6]}", daemon=True).start()
        return plan

    async def cleanup_preview(self, request: Request) -> Response:
        async def handler() -> Response:
            params = request.query_params
            session, new = self.session_of(request)
            try:
                plan = self.start_plan(session, params, params.getlist("job_id"), params.getlist("state"),
                                       request.url.query)
            except plans.TooManyPlans as exc:
                return self.error(request, 429, str(exc))
            return self.with_session(RedirectResponse(f"/cleanup/plans/{plan.plan_id}", status_code=303),
                                     session, new)
        return await self.guarded(request, handler)

    async def plan_html(self, request: Request) -> Response:
        session, _ = self.session_of(request)
        plan = self.book.plan(session, request.path_params["plan_id"])
        if plan is None:
            return self.error(request, 404, NO_SUCH_PLAN)
        if plan.result_id:
            return RedirectResponse(f"/cleanup/results/{plan.result_id}", status_code=303)
        if not plan.ready:  # small plans are ready at once; big ones show progress
            await run_in_threadpool(plan.done.wait, 0.5)
        if not plan.ready:
            response = self.page(request, "cleanup_wait.html", plan=plan, nav="usage",
                                 waited=time.monotonic() - plan.started)
            response.headers["Refresh"] = "1"
            return response
        if plan.error:
            return self.error(request, 500, f"the preview failed: {plan.error}")
        show = request.query_params.get("show", "")
        rows = plan.to_remove if show == "remove" else plan.to_keep if show == "keep" else plan.jobs or []
        page = plans.Page.of(len(rows), views.int_param(request.query_params, "page", 1, 1, 10**9))
        return self.page(request, "cleanup.html", plan=plan, rows=rows[page.start:page.stop], page=page,
                         show=show, nav="usage")

    async def cleanup_confirm(self, request: Request) -> Response:
        form = await request.form()
        refusal = check_csrf(request, _text(form.get(CSRF_FIELD)))
        if refusal is not None:
            return refusal
        session, _ = self.session_of(request)
        plan = self.book.plan(session, _text(form.get("plan_id")) or "")
        if plan is None:
            return self.error(request, 404, NO_SUCH_PLAN)
        if plan.result_id:  # confirmed already: show what was done, never do it again
            return RedirectResponse(f"/cleanup/results/{plan.result_id}", status_code=303)
        if plan.forced and not views.is_on(form.get("confirm_force")):
            return self.error(request, 400, "cleaning up with force needs the confirmation box "
                                            "ticked: it deletes what the preview says will be lost")
        outcome = await self.confirm(plan)
        if isinstance(outcome, str):
            return self.stale(request, plan, outcome)
        return RedirectResponse(f"/cleanup/results/{outcome.result_id}", status_code=303)

    async def confirm(self, plan: plans.Plan) -> plans.CleanupResult | str:
        """Carry out a plan unless it is stale or busy: its result, or why not (a 409's message)."""
        if not self.book.claim(plan):
            return ("this preview is not ready yet, or is being confirmed already: "
                    "wait a moment and reload")
        result = None
        try:
            changed = await self.share.run(lambda store: plans.stale_jobs(store, plan))
            if changed:
                return plans.stale_message(changed)
            result = await self.share.run(lambda store: plans.carry_out(store, plan))
            return result
        finally:
            self.book.release(plan, result)

    def stale(self, request: Request, plan: plans.Plan, message: str) -> Response:
        again = f"{self.prefix}/cleanup?{plan.again}"
        if wants_json(request):
            return JSONResponse({"error": message, "preview_again": again}, status_code=409)
        return self.page(request, "error.html", 409, message=message, title="Error 409",
                         again=again)

    async def result_html(self, request: Request) -> Response:
        session, _ = self.session_of(request)
        result = self.book.result(session, request.path_params["result_id"])
        if result is None:
            return self.error(request, 404, "no such cleanup result (results are kept for an hour, "
                                            "for the browser that confirmed the cleanup)")
        params = request.query_params
        removed = plans.Page.of(len(result.removed), views.int_param(params, "page", 1, 1, 10**9))
        kept = plans.Page.of(len(result.kept), views.int_param(params, "kept_page", 1, 1, 10**9))
        return self.page(request, "cleanup_done.html", result=result, removed_page=removed,
                         kept_page=kept, nav="usage")

    async def cleanup_json(self, request: Request) -> Response:
        refusal = check_csrf(request, None)
        if refusal is not None:
            return refusal

        async def handler() -> Response:
            try:
                body = await request.json()
            except ValueError:
                raise views.BadQuery("the body must be a JSON object") from None
            session, new = self.session_of(request)
            if isinstance(body, dict) and "plan_id" in body:
                plan = self.book.plan(session, str(body["plan_id"]))
                if plan is None:
                    return self.error(request, 404, NO_SUCH_PLAN)
                if plan.result_id:
                    result = self.book.result(session, plan.result_id)
                    if result is not None:
                        return JSONResponse({**result.to_json(), "repeated": True})
                    return self.error(request, 409, "this plan was carried out already")
                outcome = await self.confirm(plan)
                if isinstance(outcome, str):
                    return self.stale(request, plan, outcome)
                return JSONResponse(outcome.to_json())
            asked = CleanupRequest.from_body(body)
            if not asked.dry_run:
                try:
                    answer = await self.share.run(asked.run)
                except views.PlanChanged as exc:
                    return self.error(request, 409, str(exc))
                return self.with_session(JSONResponse(answer), session, new)
            # A preview: its report, and its plan to confirm by id.
            try:
                plan = self.book.new_plan(session, self.share.url, asked.force, asked.describe(), "")
            except plans.TooManyPlans as exc:
                return self.error(request, 429, str(exc))
            made = None
            try:
                answer, made = await self.share.run(asked.preview)
            finally:
                self.book.finish(plan, made, "" if made is not None else "the plan failed")
            answer["plan"] = plan.to_json()
            return self.with_session(JSONResponse(answer), session, new)
        return await self.guarded(request, handler)

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/jobs", status_code=303)

    async def on_404(self, request: Request, exc: Exception) -> Response:
        return self.error(request, 404, "no such page")

    async def on_405(self, request: Request, exc: Exception) -> Response:
        return refused(request, 405, "method not allowed (actions are POSTs from the page's buttons)")

    # -- the application -----------------------------------------------------------------

    def routes(self) -> list[Route | Mount]:
        """The page's routes (docs/ui.md lists them)."""
        return [
            Route("/", self.home),
            Route("/jobs", self.jobs_html),
            Route("/jobs/{job_id}", self.job_html),
            Route("/jobs/{job_id}/cancel", self.cancel, methods=["POST"]),
            Route("/usage", self.usage_html),
            Route("/cleanup", self.cleanup_preview),
            Route("/cleanup", self.cleanup_confirm, methods=["POST"]),
            Route("/cleanup/plans/{plan_id}", self.plan_html),
            Route("/cleanup/results/{result_id}", self.result_html),
            Route("/api/jobs", self.jobs_json),
            Route("/api/status", self.status_json),
            Route("/api/jobs/{job_id}/output", self.output_text),
            Route("/api/jobs/{job_id}/preview", self.preview_json),
            Route("/api/jobs/{job_id}/cancel", self.cancel, methods=["POST"]),
            Route("/api/du", self.usage_html),
            Route("/api/cleanup", self.cleanup_json, methods=["POST"]),
            Route("/api/rows", self.rows_json),
            Route("/jobs/{job_id}/cancel", self.cancel_page),
            Route("/jobs/{job_id}/download/{name}", self.download),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    def asgi(self, allowed_hosts: set[str] | None) -> ASGIApp:
        """The Starlette application behind the security middleware (and the prefix, if any)."""
        app = Starlette(routes=self.routes(), exception_handlers={404: self.on_404, 405: self.on_405})
        app.state.secrets = self.secrets
        app.add_middleware(AccessMiddleware, secrets_=self.secrets, allowed_hosts=allowed_hosts)
        return PrefixMiddleware(app, self.prefix) if self.prefix else app


def create_app(share_dir: str, options: dict[str, Any] | None = None, token: str = "",
               port: int = 0, allowed_hosts: set[str] | None = None, prefix: str = "") -> ASGIApp:
    """The web page of one share dir.

    Parameters
    ----------
    share_dir
        The share dir (path or fsspec URL).
    options
        Its fsspec storage options.
    token
        The secret every request must carry (see :mod:`rxjobs.ui.security`).
    port
        The port served on (names the cookie).
    allowed_hosts
        The names a request's ``Host`` may give (None: any).
    prefix
        The random path the page is served under (:mod:`rxjobs.ui.prefix`), and
        the only path its cookie is sent to; ``""``: at ``/``.
    """
    return JobsPage(share_dir, options, token, port, prefix).asgi(allowed_hosts)


@dataclass(frozen=True)
class CleanupRequest:
    """A checked body of ``POST /api/cleanup``: jobs by id, or a policy's keys."""

    ids: list[str]
    policy_keys: dict[str, Any]
    dry_run: bool
    force: bool

    @classmethod
    def from_body(cls, body: Any) -> CleanupRequest:
        """Check a hostile JSON body; :class:`views.BadQuery` says what is wrong."""
        if not isinstance(body, dict):
            raise views.BadQuery("the body must be a JSON object")
        ids = body.get("job_ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) and is_job_id(i) for i in ids):
            raise views.BadQuery("job_ids must be a list of job ids")
        policy_keys = body.get("policy")
        if ids and policy_keys is not None:
            raise views.BadQuery("give job_ids or a policy, not both")
        if not ids and not isinstance(policy_keys, dict):
            raise views.BadQuery('name the jobs ("job_ids") or give a "policy" ({} for every job)')
        return cls(ids, dict(policy_keys) if isinstance(policy_keys, dict) else {},
                   views.is_on(body.get("dry_run")), views.is_on(body.get("force")))

    def policy(self) -> RetentionPolicy:
        """The asked policy (BadQuery if invalid); for named jobs only its ``force``."""
        try:
            return RetentionPolicy.from_mapping({**self.policy_keys, "force": self.force})
        except ValueError as exc:
            raise views.BadQuery(str(exc)) from None

    def describe(self) -> str:
        return plans.describe(self.ids or None, self.policy())

    def preview(self, store: Store) -> tuple[dict[str, Any], list[plans.PlanJob]]:
        """A dry run's JSON report, and the jobs of its plan (:func:`plans.plan_jobs`).

        A policy's report and plan are decided on one survey of the share dir.
        """
        if self.ids:
            return self.run(store), plans.plan_jobs(store, self.ids, self.policy())
        policy = self.policy()
        survey = views.survey_with_sizes(store)
        plan = views.plan_policy(store, policy, survey)
        return (views.cleanup_json(plan.report, store, True, self.force, plan),
                plans.plan_jobs(store, None, policy, survey))

    def run(self, store: Store) -> dict[str, Any]:
        """Plan or run the cleanup in ``store``; its JSON report."""
        if self.ids:
            if self.dry_run:
                plan = views.plan_named(store, self.ids, self.force)
                return views.cleanup_json(plan.report, store, True, self.force)
            report = views.run_cleanup(store, self.ids, self.force, confirmed_forced=self.ids)
            return views.cleanup_json(report, store, False, self.force)
        policy = self.policy()
        plan = views.plan_policy(store, policy)
        if self.dry_run:
            return views.cleanup_json(plan.report, store, True, self.force, plan)
        report = views.run_cleanup(store, plan.would_remove, self.force,
                                   confirmed_forced=list(plan.forced))
        return views.cleanup_json(report, store, False, self.force, plan)


def _states(store: Store, ids: list[str]) -> list[dict[str, str]]:
    """Each named job's state and its reason (``GET /api/status``)."""
    rows = []
    for job_id in ids:
        if not is_job_id(job_id):
            rows.append({"job_id": job_id, "state": "missing", "reason": "invalid job id"})
            continue
        derived = jobs.job_status(store, job_id)
        reason = derived.reason
        if derived.status.value == "missing":
            reason = f"not found in share dir {store.url}"
        rows.append({"job_id": job_id, "state": derived.status.value, "reason": reason})
    return rows


def _text(value: Any) -> str | None:
    """A form field as text (an uploaded file is no text)."""
    return value if isinstance(value, str) else None


def _asked_cleanup(params: Any, job_ids: list[str],
                   states: list[str]) -> tuple[list[str] | None, RetentionPolicy]:
    """The jobs a preview names (None: what the policy picks) and its policy (BadQuery if invalid)."""
    force = views.is_on(params.get("force"))
    if views.is_on(params.get("selected")) and not job_ids:
        raise views.BadQuery("no jobs selected: tick the jobs to clean up on the jobs page")
    if job_ids:
        if not all(is_job_id(i) for i in job_ids):
            raise views.BadQuery("invalid job id in the cleanup")
        return job_ids, RetentionPolicy(force=force)
    return None, views.policy_from_params(params, states)
