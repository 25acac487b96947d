"""The FinOps page in the Airflow UI: a FastAPI app under ``/finops`` and a navigation entry.

The figures come from ``traceo_finops.ui`` (pure, tested without Airflow); this file is the thin Airflow part.
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin


@cache
def _finops_app() -> list[dict[str, Any]]:
    # Imported here, not at module load: every task process loads the plugins folder too, and the page's FastAPI app
    # pulls in Airflow's whole API security stack (~0.8 s idle, 1.2-1.6 s per task under load, measured in the
    # production-like stack's task logs). Only the api-server and `airflow plugins` read fastapi_apps.
    from finops_ui.app import URL_PREFIX, create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "FinOps"}]


class _BuiltOnFirstRead:
    """A class attribute computed on first read (the plugins manager reads ``fastapi_apps`` from the class)."""

    def __get__(self, obj: object, owner: type | None = None) -> list[dict[str, Any]]:
        return _finops_app()


class FinopsUiPlugin(AirflowPlugin):
    name = "traceo_finops_ui"
    fastapi_apps = _BuiltOnFirstRead()
    # href relative, without a leading slash: the UI may sit behind a path prefix.
    external_views: ClassVar[list[dict[str, Any]]] = [
        {"name": "FinOps", "href": "finops/", "destination": "nav", "url_route": "finops", "category": "browse"}]
