"""The FinOps page's FastAPI app: the HTML page, its JSON and the actions' artifacts.

Every route needs the api-server's own login (``requires_access_view``: a bearer JWT from
``POST /auth/token`` or the UI's ``_token`` cookie), like the rest of the UI. The lake is read in
FastAPI's thread pool (plain ``def`` routes): a cold year of partitions must not block the event loop.
"""

from __future__ import annotations

import mimetypes
from functools import lru_cache

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import requires_access_view
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from traceo_finops import ui
from traceo_finops.reports import ReportError, ReportStore
from traceo_finops.ui import URL_PREFIX

__all__ = ["URL_PREFIX", "create_app"]


@lru_cache(maxsize=1)
def _store() -> ReportStore:
    # The configuration's report root (FINOPS_CONFIG / FINOPS_REPORT_ROOT); S3 credentials from report_conn_id.
    from traceo_finops.airflow_adapter import report_store

    return report_store()


def create_app() -> FastAPI:
    app = FastAPI(title="Traceo FinOps", dependencies=[Depends(requires_access_view(AccessView.WEBSITE))],
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/api/report")
    def report_json() -> JSONResponse:
        return JSONResponse(ui.report_page(_store()))

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        # Served at ".../finops/" (the nav entry's href): its relative links resolve under the prefix.
        return HTMLResponse(ui.render_html(ui.report_page(_store())))

    @app.get("/index.html", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("./")

    @app.get("/artifact")
    def artifact(uri: str) -> Response:
        try:
            content = ui.read_artifact(_store(), uri)
        except ReportError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        kind = mimetypes.guess_type(uri)[0] or "text/plain"
        if kind.startswith("text/html"):
            kind = "text/plain"  # an artifact is data, never a page of its own
        return Response(content, media_type=kind, headers={"Content-Disposition": "inline"})

    @app.get("/api/slo/decision")
    def slo_decision(service: str, source: str | None = None, tenant: str | None = None) -> JSONResponse:
        return _slo_decision(service, source, tenant)

    return app


def _slo_decision(service: str, source: str | None, tenant: str | None) -> JSONResponse:
    """A service's deploy decision for a deploy pipeline: the newest committed finops_slo decision JSON; 404 when
    there is none, 409 when several sources/tenants have one and neither ``source`` nor ``tenant`` says which."""
    try:
        body = ui.slo_decision(_store(), service, source, tenant)
    except ui.DecisionAmbiguous as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except ReportError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
