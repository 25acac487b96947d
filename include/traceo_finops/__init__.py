"""Traceo FinOps domain library: pure, typed Python; Airflow only in airflow_adapter."""
