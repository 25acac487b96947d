"""Helpers shared by the tests, each in one place.

- ``net``: free ports on 127.0.0.1.
- ``servers``: small real HTTP servers on 127.0.0.1 (fakes of Prometheus, Mimir gateways, exporters, proxies).
- ``prometheus``: a Prometheus client for a URL, a private Prometheus 2.42 on a backfilled history.
- ``slack``: a private Slack sink of a test module's own.
- ``dags``: a product DAG parsed from its own file.
- ``s3``: the S3 tiering tests' private moto server and the hooks that make S3 fail.
"""
