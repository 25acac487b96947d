"""The product's DAGs as the tests run them: each parsed from its own file under ``dags/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def load_dag(dag_id: str) -> Any:
    """The DAG ``dag_id`` from ``dags/<dag_id>.py``, which must parse without import errors."""
    from airflow.dag_processing.dagbag import DagBag  # Airflow reads its settings at import: conftest sets them

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)
