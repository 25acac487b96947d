"""Prometheus for tests: a client for a URL, and a private Prometheus 2.42 (the Debian binary) of a test's own on
127.0.0.1, optionally holding a history backfilled with promtool."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from devstack.proc import spawn, stop, wait_http
from tests.support.net import free_port
from traceo_finops.prometheus import PrometheusClient, SourceSpec

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
KEEP_HISTORY = "--storage.tsdb.retention.time=3650d"  # a backfilled history is older than the default 15d


def prometheus_client(url: str, name: str = "itest", **spec: Any) -> PrometheusClient:
    """A client for the Prometheus at ``url``; ``spec`` sets the other :class:`SourceSpec` fields."""
    return PrometheusClient(SourceSpec(name=name, base_url=url, **spec))


def om_sample(metric: str, labels: dict[str, str], value: object, t: int) -> str:
    """One OpenMetrics sample line (labels sorted, ``t`` in seconds) for :func:`backfill_openmetrics`."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{metric}{{{inner}}} {value} {t}\n"


def backfill_openmetrics(openmetrics: str, data: Path) -> None:
    """Write the OpenMetrics text (ending in ``# EOF``) as TSDB blocks into ``data``
    (``promtool tsdb create-blocks-from openmetrics``)."""
    om = data.parent / f"{data.name}.om"
    om.write_text(openmetrics)
    out = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(om), str(data)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@contextmanager
def local_prometheus(root: Path, config: str | dict[str, Any], *flags: str, data: Path | None = None,
                     port: int | None = None) -> Iterator[str]:
    """A Prometheus of the test's own on 127.0.0.1:``port`` (a free one by default); yields its URL once ready.

    ``config`` is ``prometheus.yml`` (text, or a mapping to dump), written into ``root``; the TSDB is ``data``
    (``root/data`` by default), the process' pid file and log are in ``root/run``. Stopped on exit.
    """
    port = port or free_port()
    path = root / "prometheus.yml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    data = data or root / "data"
    run = root / "run"
    url = f"http://127.0.0.1:{port}"
    spawn("prometheus", [PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={data}",
                         f"--web.listen-address=127.0.0.1:{port}", *flags], run, cwd=root)
    try:
        wait_http(f"{url}/-/ready", timeout=60, name="prometheus", log=run / "prometheus.log")
        yield url
    finally:
        stop("prometheus", run)
