"""The FinOps page in the Airflow UI: a FastAPI app under ``/finops`` and a navigation entry.

The figures come from ``traceo_finops.ui`` (pure, tested without Airflow); this file is the thin Airflow part.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from finops_ui.app import URL_PREFIX, create_app


class FinopsUiPlugin(AirflowPlugin):
    name = "traceo_finops_ui"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "FinOps"}]
    # href relative, without a leading slash: the UI may sit behind a path prefix.
    external_views: ClassVar[list[dict[str, Any]]] = [
        {"name": "FinOps", "href": "finops/", "destination": "nav", "url_route": "finops", "category": "browse"}]
