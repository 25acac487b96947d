"""The FinOps page's figures, read from the committed report lake (local disk or S3), and its HTML.

:func:`report_page` returns everything the page shows as one JSON-safe dict: the newest committed
cost report's totals, saving by category, the ranked actions with links to their artifacts, the
trend of daily totals over the trailing year of cost reports (the newest report's ``cost_trend`` partition: one
file; for a report written before that dataset existed, each day's ``cost_summary``), each dataset's freshness and
quality-check status, and the failed targets of each workflow's last run. :func:`render_html` turns it into the page.

Only committed data is read: a partition counts when its ``run_id`` is the one its DAG's commit
marker names (the rule of :func:`traceo_finops.kit.publish.read_committed`, applied here to markers
already in hand, so a year of partitions costs one listing of ``_commits/`` and not one per read).
Of the markers listed, the page reads only those it shows (:func:`page_markers`: each DAG's newest, the
cost reports of the trend only when the newest has no ``cost_trend``, older ones only to find a dataset's newest
committed partition), not a year of every DAG's. Markers and trend points are cached by file path, size and
mtime: a warm page reads only what changed.
On S3 every round trip counts, so the reads that remain are concurrent: ``_commits/`` is listed one DAG
folder per request at once, and markers, partitions and trend files are fetched by a small thread pool,
each file in one whole-object GET (they are small) parsed from memory. Both caches are also kept on local
disk (one file per report root, ``FINOPS_UI_CACHE_DIR``), so a restarted api-server or another worker
process does not read a year of markers again.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import posixpath
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict, TypeVar
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from traceo_finops.cost_report.trend import USD_COLUMNS as TREND_COLUMNS
from traceo_finops.cost_report.trend import page_points
from traceo_finops.kit.datasets import QUALITY_CHECKS, RUN_TARGETS, TARGET_FAILED
from traceo_finops.kit.publish import COMMITS_DIR
from traceo_finops.reports import ARTIFACTS_DIR, PART_FILE, RUN_ID_COLUMN, ReportError, ReportStore
from traceo_finops.shapes import JsonObject

log = logging.getLogger(__name__)

COST_DAG = "finops_cost_report"
# The cost report's daily totals of the trailing year, committed with each report (cost_report.trend): the chart
# reads this one partition of the newest report; before it existed, one cost_summary partition per day.
COST_TREND = "cost_trend"
# Where the Airflow api-server mounts the page (plugins/finops_plugin.py); digests link to it.
URL_PREFIX = "/finops"
KIT_DATASETS = (RUN_TARGETS.name, QUALITY_CHECKS.name)
# The cost report reads an upstream partition up to 8 days old (cost_report.max_input_age): older is stale.
STALE_AFTER = timedelta(days=8)
TREND_DAYS = 366
NOTHING_YET = ("Nothing to report yet: no cost report has been committed. Run the finops workflows "
               "(cardinality, rightsizing, s3_tiering, recording_rules), then finops_cost_report.")
NOTHING_IN_REPORT = ("Nothing to report yet: the newest cost report found no committed upstream dataset "
                     "to cost. Run the other finops workflows first.")


class Marker(TypedDict):
    """The part of a commit marker the page uses."""

    dag_id: str
    report_date: str
    run_id: str
    committed_at: str
    datasets: dict[str, Any]
    coverage: str


# A file as listed: (path, size, version) — the version is the mtime on local disk and the ETag on S3.
_Key = tuple[str, int, str]

_lock = threading.Lock()
_marker_cache: dict[_Key, JsonObject] = {}
_trend_cache: dict[tuple[str, int, str, str], tuple[float, float, float]] = {}
# Concurrent reads per step: S3 answers each GET in tens of milliseconds, so a year of markers is read
# ~16 at a time (local disk gains little from it, and loses nothing).
READERS = 16

# Where the caches are kept between processes: a folder (default <tmp>/traceo-finops-ui), or "off".
CACHE_DIR_ENV = "FINOPS_UI_CACHE_DIR"
_CACHE_VERSION = 2
_loaded: set[str] = set()  # report roots whose disk cache this process has read
_dirty: set[str] = set()  # report roots with cache entries not yet on disk
# On S3 a folder is listed whole (a year of markers is ~2,000 keys, several LIST pages) at most this often; in
# between, each DAG's folder is listed only from its second-newest key on (S3's StartAfter), so a new report, or a
# rerun of the newest date, shows at once, and a rerun of an older date within this many seconds.
FULL_LISTING_EVERY = 60.0
_listings: dict[str, tuple[float, dict[str, _Key]]] = {}  # S3 folder URI -> (when listed whole, path -> key)
_s3_clients: dict[str, Any] = {}

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def _concurrently(fn: Callable[[_In], _Out], items: Iterable[_In]) -> list[_Out]:
    """``[fn(i) for i in items]``, up to :data:`READERS` at a time (pyarrow's I/O releases the GIL)."""
    todo = list(items)
    if len(todo) < 2:
        return [fn(i) for i in todo]
    with ThreadPoolExecutor(min(READERS, len(todo)), thread_name_prefix="finops-ui") as pool:
        return list(pool.map(fn, todo))


def _info_key(info: pafs.FileInfo) -> _Key:
    return (info.path, int(info.size or 0), str(info.mtime_ns or 0))


def _s3(store: ReportStore) -> Any:
    """A boto3 S3 client of the store's credentials and endpoint (one per root, made once under the lock: boto3
    clients are thread-safe, their creation is not)."""
    with _lock:
        client = _s3_clients.get(store.uri)
        if client is None:
            import boto3
            from botocore.config import Config

            def opt(name: str) -> str | None:
                value = store.s3_options.get(name)
                return str(value) if value else None

            endpoint = opt("endpoint_override")
            client = boto3.session.Session().client(
                "s3", aws_access_key_id=opt("access_key"), aws_secret_access_key=opt("secret_key"),
                aws_session_token=opt("session_token"), region_name=opt("region"),
                endpoint_url=f"{opt('scheme') or 'https'}://{endpoint}" if endpoint else None,
                config=Config(max_pool_connections=READERS + 4))
            _s3_clients[store.uri] = client
    return client


def _read_bytes(store: ReportStore, path: str) -> bytes | None:
    """The content of ``path`` (one GET on S3, no HEAD first), or None when it does not exist."""
    if not store.is_s3:
        return store.read_file(path)
    bucket, _, key = path.partition("/")
    client = _s3(store)
    try:
        return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


def _s3_list(store: ReportStore, folder: str, start_after: str = "") -> dict[str, _Key]:
    """path -> key of every object under ``folder`` (``bucket/prefix``), after ``start_after`` when given."""
    bucket, _, prefix = folder.partition("/")
    args: dict[str, str] = {"Bucket": bucket, "Prefix": prefix.rstrip("/") + "/"}
    if start_after:
        args["StartAfter"] = start_after.partition("/")[2]
    out: dict[str, _Key] = {}
    for page in _s3(store).get_paginator("list_objects_v2").paginate(**args):
        for obj in page.get("Contents", []):
            path = f"{bucket}/{obj['Key']}"
            if not path.endswith("/"):  # an empty folder marker
                out[path] = (path, int(obj["Size"]), str(obj["ETag"]))
    return out


def _s3_subfolders(store: ReportStore, folder: str) -> list[str]:
    bucket, _, prefix = folder.partition("/")
    pages = _s3(store).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/",
                                                                 Delimiter="/")
    return [f"{bucket}/{p['Prefix'].rstrip('/')}" for page in pages for p in page.get("CommonPrefixes", [])]


def _s3_list_whole(store: ReportStore, folder: str, by_subfolder: bool) -> dict[str, _Key]:
    """:func:`_s3_list` of ``folder``; with ``by_subfolder`` each subfolder at once (S3 lists 1,000 keys a request,
    one page after the other: a year of six DAGs' markers is three pages in a row, or one page per DAG at once)."""
    if not by_subfolder:
        return _s3_list(store, folder)
    bucket, _, prefix = folder.partition("/")
    files: dict[str, _Key] = {}
    subfolders: list[str] = []
    for page in _s3(store).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/",
                                                                     Delimiter="/"):
        subfolders += [f"{bucket}/{p['Prefix'].rstrip('/')}" for p in page.get("CommonPrefixes", [])]
        for obj in page.get("Contents", []):
            path = f"{bucket}/{obj['Key']}"
            if not path.endswith("/"):
                files[path] = (path, int(obj["Size"]), str(obj["ETag"]))
    for found in _concurrently(lambda sub: _s3_list(store, sub), subfolders):
        files.update(found)
    return files


def _listing(store: ReportStore, folder: str, by_subfolder: bool) -> dict[str, _Key]:
    """path -> key of every file under ``folder``.

    Local disk: listed each time. S3: listed whole at most every :data:`FULL_LISTING_EVERY` seconds; in between,
    each group of keys that sort by report date (each subfolder with ``by_subfolder``, else the folder) only from
    its second-newest key on, and new subfolders whole.
    """
    if not store.is_s3:
        infos = store.fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
        return {i.path: _info_key(i) for i in infos if i.type == pafs.FileType.File}
    uri, now = store.uri_of(folder), time.time()
    with _lock:
        state = _listings.get(uri)
    if state is None or not state[1] or not 0 <= now - state[0] <= FULL_LISTING_EVERY:
        files = _s3_list_whole(store, folder, by_subfolder)
        with _lock:
            _listings[uri] = (now, files)
            _dirty.add(store.uri)
        return dict(files)
    files = dict(state[1])
    groups: dict[str, list[str]] = {}
    for p in sorted(files):
        groups.setdefault(posixpath.dirname(p) if by_subfolder else folder, []).append(p)
    if by_subfolder:
        for new in _s3_subfolders(store, folder):
            groups.setdefault(new, [])

    def relist(name: str) -> tuple[str, str, dict[str, _Key]]:
        paths = groups[name]
        start = paths[-2] if len(paths) > 1 else ""
        return name, start, _s3_list(store, name, start)

    for name, start, found in _concurrently(relist, sorted(groups)):
        for p in groups[name]:
            if p > start:
                files.pop(p, None)  # listed again (or gone)
        files.update(found)
    with _lock:
        _listings[uri] = (state[0], files)
    return dict(files)


def _cache_file(store: ReportStore) -> Path | None:
    where = os.environ.get(CACHE_DIR_ENV, "")
    if where.lower() == "off":
        return None
    folder = Path(where) if where else Path(tempfile.gettempdir()) / "traceo-finops-ui"
    return folder / f"{hashlib.sha256(store.uri.encode()).hexdigest()[:24]}.json"


def _load_disk_cache(store: ReportStore) -> None:
    """Fill the caches from the disk copy of ``store``'s root, once per process (entries are still validated
    by file path, size and mtime before use)."""
    with _lock:
        if store.uri in _loaded:
            return
        _loaded.add(store.uri)
    path = _cache_file(store)
    try:
        data = json.loads(path.read_text()) if path is not None and path.is_file() else None
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION or data.get("root") != store.uri:
        return
    try:
        with _lock:
            for p, size, version, marker in data.get("markers") or []:
                if isinstance(marker, dict):
                    _marker_cache.setdefault((str(p), int(size), str(version)), marker)
            for p, size, version, run, (cur, proj, sav) in data.get("trend") or []:
                _trend_cache.setdefault((str(p), int(size), str(version), str(run)),
                                        (float(cur), float(proj), float(sav)))
            for uri, (when, files) in (data.get("listings") or {}).items():
                if str(uri).startswith(store.uri + "/") and float(when) > _listings.get(uri, (0.0, {}))[0]:
                    _listings[str(uri)] = (float(when), {str(p): (str(p), int(n), str(v)) for p, n, v in files})
    except (TypeError, ValueError):
        log.warning("ignoring the unreadable FinOps page cache %s", path)


def _save_disk_cache(store: ReportStore) -> None:
    """Write the caches of ``store``'s root to disk (replaced atomically) if this process added to them."""
    path = _cache_file(store)
    prefix = store.base.rstrip("/") + "/"
    with _lock:
        if store.uri not in _dirty:
            return
        _dirty.discard(store.uri)
        markers = [[*k, m] for k, m in _marker_cache.items() if k[0].startswith(prefix)]
        points = [[*k, list(v)] for k, v in _trend_cache.items() if k[0].startswith(prefix)]
        listings = {uri: [when, list(files.values())] for uri, (when, files) in _listings.items()
                    if uri.startswith(store.uri + "/")}
    if path is None:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": _CACHE_VERSION, "root": store.uri, "markers": markers,
                                   "trend": points, "listings": listings}))
        os.replace(tmp, path)
    except OSError as exc:  # a cache only: the page works without it
        log.warning("could not write the FinOps page cache %s: %s", path, exc)
        tmp.unlink(missing_ok=True)


def _forget(cache: dict[Any, Any], prefix: str, keep: set[_Key]) -> None:
    """Drop the entries under ``prefix`` whose file is no longer listed as it was (rewritten or removed)."""
    for key in [k for k in cache if k[0].startswith(prefix) and tuple(k[:3]) not in keep]:
        del cache[key]


def _parse_marker(raw: bytes | None) -> JsonObject | None:
    try:
        marker = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return marker if isinstance(marker, dict) else None


def _list_markers(store: ReportStore) -> list[_Key]:
    """Every ``_commits/<dag_id>/report_date=D.json`` (on S3 mostly from the listing cache, see :func:`_listing`)."""
    found = _listing(store, store.path(COMMITS_DIR), by_subfolder=True)
    return [k for p, k in sorted(found.items()) if _is_marker(p)]


def markers_by_dag(store: ReportStore) -> dict[str, list[JsonObject]]:
    """dag_id -> its commit markers, oldest report date first (one listing of ``_commits/``).

    A marker is read once while its file is unchanged; the ones not cached yet are read concurrently.
    """
    _load_disk_cache(store)
    keys = _list_markers(store)
    known = _read_markers(store, keys, keys)
    out: dict[str, list[JsonObject]] = {}
    for key in keys:
        marker = known[key]
        if marker and marker.get("dag_id") and marker.get("report_date"):
            out.setdefault(str(marker["dag_id"]), []).append(marker)
    for markers in out.values():
        markers.sort(key=lambda m: str(m["report_date"]))
    return out


def _dataset_folders(store: ReportStore) -> set[str]:
    """The names of the dataset folders at the top of the root (one LIST with a delimiter on S3)."""
    if store.is_s3:
        bucket, _, prefix = store.base.partition("/")
        pages = _s3(store).get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix.rstrip("/") + "/" if prefix else "", Delimiter="/")
        names = {posixpath.basename(p["Prefix"].rstrip("/")) for page in pages for p in page.get("CommonPrefixes", [])}
    else:
        infos = store.fs.get_file_info(pafs.FileSelector(store.base, allow_not_found=True))
        names = {posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory}
    return {n for n in names if n and not n.startswith("_") and n not in KIT_DATASETS}


def _is_marker(path: str) -> bool:
    return posixpath.basename(path).startswith("report_date=") and path.endswith(".json")


def _recent_marker_keys(store: ReportStore, since: date) -> tuple[list[_Key], set[str]] | None:
    """On S3, before ``_commits/`` was ever listed whole: each DAG's markers from ``since`` on (S3's ``StartAfter``;
    the cost report's whole, for the trend), its folder at once; and the DAGs listed so only. A DAG with no marker
    since then is listed whole. None on local disk or once listed whole (then :func:`_listing` is as cheap)."""
    if not store.is_s3:
        return None
    folder = store.path(COMMITS_DIR)
    with _lock:
        if store.uri_of(folder) in _listings:
            return None

    def one(sub: str) -> tuple[str, dict[str, _Key], bool]:
        dag = posixpath.basename(sub)
        if dag != COST_DAG:
            found = _s3_list(store, sub, posixpath.join(sub, f"report_date={since.isoformat()}"))
            if any(_is_marker(p) for p in found):
                return dag, found, True
        return dag, _s3_list(store, sub), False

    listed = _concurrently(one, _s3_subfolders(store, folder))
    keys = [k for _, found, _ in listed for p, k in found.items() if _is_marker(p)]
    return sorted(keys), {dag for dag, _, partial in listed if partial}


def page_markers(store: ReportStore, trend_days: int = TREND_DAYS,
                 today: date | None = None) -> dict[str, list[JsonObject]]:
    """The commit markers the page shows, in :func:`markers_by_dag`'s shape, without reading the other markers.

    ``_commits/`` is listed (on S3 one LIST per 1,000 keys, each DAG's folder at once) and, newest first, only
    these are read: each DAG's newest marker (its ``quality_checks`` and ``run_targets``, its datasets), the
    cost report's newest with ``cost_summary`` — and, only when that one names no ``cost_trend`` (a report written
    before it existed), its newest ``trend_days`` (the trend from each day's ``cost_summary``) —, and older markers
    only while a dataset
    folder under the root is named by no marker read yet (a date whose set was refused keeps showing the older
    committed partition). So each DAG's list is its newest markers, without a gap, and the page built from it
    equals the page built from every marker — as long as a dataset is committed by one DAG. A marker whose
    ``dag_id`` or ``report_date`` is not the one its file name says falls back to reading every marker.

    On an S3 root not listed yet, the other DAGs' folders are listed only from ``today`` - :data:`STALE_AFTER` on
    (:func:`_recent_marker_keys`), and one whole only if older markers of it are needed.
    """
    _load_disk_cache(store)
    since = (today or datetime.now(UTC).date()) - STALE_AFTER
    with ThreadPoolExecutor(1, thread_name_prefix="finops-ui-list") as pool:
        folders_future = pool.submit(_dataset_folders, store)
        recent = _recent_marker_keys(store, since)
        keys, partial = recent if recent is not None else (_list_markers(store), set[str]())
        folders = folders_future.result()
    by_dag: dict[str, list[_Key]] = {}
    for key in keys:  # sorted by path: each DAG's keys oldest report date first
        by_dag.setdefault(posixpath.basename(posixpath.dirname(key[0])), []).append(key)
    read: dict[str, int] = {dag: 0 for dag in by_dag}  # how many of each DAG's newest keys are read
    want = dict.fromkeys(by_dag, 1)  # the cost report's older markers only if its newest has no cost_trend
    known: dict[_Key, JsonObject | None] = {}
    while True:
        for dag in [d for d in partial if read[d] + want[d] > len(by_dag[d])]:  # older keys needed: list it whole
            partial.discard(dag)
            sub = store.path(COMMITS_DIR, dag)
            by_dag[dag] = sorted(k for p, k in _s3_list(store, sub).items() if _is_marker(p))
        todo = [k for dag, dag_keys in by_dag.items()
                for k in dag_keys[max(0, len(dag_keys) - read[dag] - want[dag]):len(dag_keys) - read[dag]]]
        for dag in by_dag:
            read[dag] = min(len(by_dag[dag]), read[dag] + want[dag])
        known.update(_read_markers(store, todo, None if partial else [k for ks in by_dag.values() for k in ks]))
        out: dict[str, list[JsonObject]] = {}
        for dag, dag_keys in by_dag.items():
            for key in dag_keys[len(dag_keys) - read[dag]:]:
                # Not in ``known``: committed between the partial and the whole listing — as if listed before it.
                marker = known.get(key)
                if not marker or not marker.get("dag_id") or not marker.get("report_date"):
                    continue  # unreadable: skipped, as markers_by_dag does
                if (str(marker["dag_id"]) != dag
                        or f"report_date={marker['report_date']}.json" != posixpath.basename(key[0])):
                    log.info("commit marker %s names another DAG or date: reading every marker", key[0])
                    return markers_by_dag(store)
                out.setdefault(dag, []).append(marker)
        names = {dag: {n for m in ms for n in (m.get("datasets") or {})} for dag, ms in out.items()}
        older = [dag for dag in by_dag if read[dag] < len(by_dag[dag]) or dag in partial]
        if folders - {n for dag_names in names.values() for n in dag_names}:
            # A dataset whose newest committed partition is named by an older marker: first in the DAGs whose
            # markers read so far name no dataset of their own (a refused or failed run's record only), then in
            # all; twice as many markers each round.
            records_only = [dag for dag in older if not names.get(dag, set()) - set(KIT_DATASETS)]
            want = {dag: max(1, read[dag]) if dag in (records_only or older) else 0 for dag in by_dag}
        else:
            reports = [m for m in out.get(COST_DAG, []) if "cost_summary" in (m.get("datasets") or {})]
            cost = trend_days if reports and COST_TREND in reports[-1]["datasets"] else len(reports)
            want = {dag: 0 if dag not in older else
                    (max(1, read[dag]) if not reports else trend_days - cost) if dag == COST_DAG and cost < trend_days
                    else 1 if dag not in out else 0 for dag in by_dag}
        if not any(want.values()):
            return out


def _read_markers(store: ReportStore, keys: Sequence[_Key],
                  listed: Sequence[_Key] | None) -> dict[_Key, JsonObject | None]:
    """key -> its marker (None when unreadable): from the cache while the file is unchanged, else read (concurrently).

    ``listed``: every marker as listed now (cache entries of files no longer listed so are dropped), if known."""
    with _lock:
        known = {k: _marker_cache.get(k) for k in keys}
    todo = [k for k in keys if known[k] is None]
    fetched = _concurrently(lambda k: _read_bytes(store, k[0]), todo)
    with _lock:
        for key, raw in zip(todo, fetched, strict=True):
            marker = _parse_marker(raw)
            if marker is not None:
                known[key] = _marker_cache[key] = marker
        if todo:
            if listed is not None:
                _forget(_marker_cache, store.path(COMMITS_DIR) + "/", set(listed))
            _dirty.add(store.uri)
    return known


def _read_parquet(store: ReportStore, path: str, columns: Sequence[str] | None = None) -> pa.Table | None:
    """The Parquet file at ``path`` in one read (one GET on S3), parsed from memory; None when missing."""
    raw = _read_bytes(store, path)
    if raw is None:
        return None
    try:
        return pq.read_table(pa.BufferReader(raw), columns=list(columns) if columns is not None else None)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReportError(f"{store.uri_of(path)} is not a readable Parquet file: {exc}") from None


def committed_table(store: ReportStore, marker: Mapping[str, Any], dataset: str) -> pa.Table:
    """``dataset``'s partition named by ``marker`` if it holds that run's rows; else :class:`ReportError`."""
    entry = (marker.get("datasets") or {}).get(dataset)
    if not entry:
        raise ReportError(f"{marker.get('dag_id')} {marker.get('report_date')} did not commit {dataset!r}")
    day = date.fromisoformat(str(marker["report_date"]))
    path = posixpath.join(store.partition_dir(dataset, day, entry.get("partition") or None), PART_FILE)
    table = _read_parquet(store, path)
    if table is None:
        raise ReportError(f"dataset {dataset!r} has no partition for {day} at {store.uri_of(path)}")
    file_run = (table.schema.metadata or {}).get(b"traceo.run_id", b"").decode()
    runs = set(table.column(RUN_ID_COLUMN).to_pylist()) if RUN_ID_COLUMN in table.column_names else set()
    runs |= {file_run} if file_run else set()
    committed_run = entry.get("run_id", marker.get("run_id"))
    if runs != {committed_run}:
        raise ReportError(f"dataset {dataset!r} {day} is uncommitted: the partition comes from run(s) "
                          f"{sorted(runs) or 'unknown'}, the committed run is {committed_run!r}")
    return table


def committed_tables(store: ReportStore, wanted: Sequence[tuple[Mapping[str, Any], str]]
                     ) -> list[pa.Table | ReportError]:
    """:func:`committed_table` of each ``(marker, dataset)``, read concurrently; an error in place of a table."""
    def one(item: tuple[Mapping[str, Any], str]) -> pa.Table | ReportError:
        try:
            return committed_table(store, *item)
        except ReportError as exc:
            return exc

    return _concurrently(one, wanted)


def _raise(exc: ReportError) -> pa.Table:
    raise exc


def _rows(table: pa.Table, drop: Sequence[str] = (RUN_ID_COLUMN, "window_start", "window_end")) -> list[JsonObject]:
    keep = [c for c in table.column_names if c not in drop]
    return [{k: _json_value(v) for k, v in row.items()} for row in table.select(keep).to_pylist()]


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def artifact_href(store: ReportStore, uri: str) -> str | None:
    """The page's relative link to an artifact under the report root, or None for anything else."""
    return f"artifact?uri={quote(uri, safe='')}" if artifact_path(store, uri) else None


def artifact_path(store: ReportStore, uri: str) -> str | None:
    """The filesystem path of artifact ``uri`` if it lies under ``<root>/_artifacts/`` (no ``..``), else None."""
    prefix = store.uri_of(store.path(ARTIFACTS_DIR)) + "/"
    if not uri or not uri.startswith(prefix) or ".." in uri.split("/"):
        return None
    return store.path(ARTIFACTS_DIR, uri[len(prefix):])


def read_artifact(store: ReportStore, uri: str) -> bytes:
    """The bytes of artifact ``uri`` (under the report root only)."""
    path = artifact_path(store, uri)
    if path is None:
        raise ReportError(f"{uri!r} is not an artifact under {store.uri}/{ARTIFACTS_DIR}")
    content = store.read_file(path)
    if content is None:
        raise ReportError(f"artifact {uri!r} does not exist")
    return content


def trend_of(store: ReportStore, cost_markers: Sequence[Mapping[str, Any]], table: pa.Table | ReportError | None,
             days: int = TREND_DAYS) -> list[JsonObject]:
    """The trend: from the newest cost report's ``cost_trend`` partition (``table``, read with its totals) when it
    has one, else (a report written before ``cost_trend`` existed, or its partition unreadable) from each day's
    ``cost_summary`` (:func:`trend`) of the ``cost_markers`` in hand."""
    if isinstance(table, pa.Table) and not {"day", *TREND_COLUMNS} <= set(table.column_names):
        table = ReportError(f"its {COST_TREND} partition lacks the columns {sorted({'day', *TREND_COLUMNS})}")
    if isinstance(table, pa.Table):
        return page_points(table.select(["day", *TREND_COLUMNS]).to_pylist(), days)
    if isinstance(table, ReportError):
        log.warning("the trend is drawn from each day's cost_summary: %s", table)
    return trend(store, cost_markers, days)


def trend(store: ReportStore, cost_markers: Sequence[Mapping[str, Any]], days: int = TREND_DAYS) -> list[JsonObject]:
    """Daily totals (current, projected, saving $/month) of the last ``days`` committed cost reports.

    Reads three columns of each committed ``cost_summary`` partition (concurrently, one GET each on S3);
    a partition already summed is taken from the cache while its file is unchanged.
    """
    wanted = [m for m in cost_markers if "cost_summary" in (m.get("datasets") or {})][-days:]
    if not wanted:
        return []
    base = store.path("cost_summary")
    _load_disk_cache(store)
    infos = _listing(store, base, by_subfolder=False)
    points: dict[str, tuple[float, float, float]] = {}
    todo: dict[str, tuple[str, str, _Key]] = {}  # path -> (report date, committed run, key)
    for m in wanted:
        day = str(m["report_date"])
        path = posixpath.join(base, f"report_date={day}", PART_FILE)
        if path not in infos:
            continue
        run = str(m["datasets"]["cost_summary"].get("run_id", m.get("run_id")))
        key = infos[path]
        with _lock:
            cached = _trend_cache.get((*key, run))
        if cached is not None:
            points[day] = cached
        else:
            todo[path] = (day, run, key)
    cols = ["current_monthly_usd", "projected_monthly_usd", "saving_monthly_usd"]

    def read(path: str) -> pa.Table | None:
        try:
            return _read_parquet(store, path, [*cols, RUN_ID_COLUMN])
        except ReportError:
            return None  # unreadable: no point for that day

    for path, table in zip(todo, _concurrently(read, todo), strict=True):
        day, run, key = todo[path]
        if table is None or table.num_rows == 0 or set(table.column(RUN_ID_COLUMN).to_pylist()) != {run}:
            continue  # empty (nothing to report that day) or not the committed run: no point
        p = tuple(round(float(pc.sum(table.column(c)).as_py() or 0.0), 2) for c in cols)
        points[day] = (p[0], p[1], p[2])
        with _lock:
            _trend_cache[(*key, run)] = points[day]
    if todo:
        with _lock:
            _forget(_trend_cache, base + "/", set(infos.values()))
            _dirty.add(store.uri)
    return [{"report_date": d, "current": p[0], "projected": p[1], "saving": p[2]} for d, p in sorted(points.items())]


def _categories(summary: Sequence[Mapping[str, Any]]) -> list[JsonObject]:
    cats: dict[str, dict[str, float]] = {}
    for r in summary:
        c = cats.setdefault(str(r["category"]), {"current": 0.0, "projected": 0.0, "saving": 0.0})
        for k in c:
            c[k] += float(r[f"{k}_monthly_usd"] or 0.0)
    return [{"category": name, **{k: round(v, 2) for k, v in c.items()}}
            for name, c in sorted(cats.items(), key=lambda kv: (-kv[1]["saving"], kv[0]))]


def _age_days(day: str, today: date) -> int:
    return (today - date.fromisoformat(day)).days


def _kit_records(markers: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[tuple[Mapping[str, Any], str]]:
    """The ``quality_checks`` and ``run_targets`` of each DAG's newest marker, in :func:`datasets_status`' order."""
    return [(dag_markers[-1], name) for _, dag_markers in sorted(markers.items())
            for name in (QUALITY_CHECKS.name, RUN_TARGETS.name)]


def datasets_status(store: ReportStore, markers: Mapping[str, Sequence[Mapping[str, Any]]], today: date,
                    stale_after: timedelta = STALE_AFTER, records: Sequence[pa.Table | ReportError] | None = None,
                    ) -> tuple[list[JsonObject], list[JsonObject]]:
    """Each dataset's newest committed partition, its age and quality status; and the failed targets.

    Both come from each DAG's newest commit marker: its ``quality_checks`` record (a refused set names
    the failed expectations there, while the previous partition stays committed) and its ``run_targets``.
    ``records``: those tables already read (:func:`committed_tables` of :func:`_kit_records`); else read here.
    """
    if records is None:
        records = committed_tables(store, _kit_records(markers))
    tables = iter(records)
    datasets: list[JsonObject] = []
    failed: list[JsonObject] = []
    for dag_id, dag_markers in sorted(markers.items()):
        latest = dag_markers[-1]
        quality: dict[str, Mapping[str, Any]] = {}
        problems: list[str] = []
        checks, targets = next(tables), next(tables)
        if isinstance(checks, ReportError):
            problems.append(str(checks))
        else:
            quality = {str(r["dataset"]): r for r in checks.to_pylist()}
        newest: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for m in dag_markers:
            for name, entry in (m.get("datasets") or {}).items():
                if name not in KIT_DATASETS:
                    newest[name] = (str(m["report_date"]), entry)
        for name, (day, entry) in sorted(newest.items()):
            q = quality.get(name)
            age = _age_days(day, today)
            datasets.append({
                "dataset": name, "dag_id": dag_id, "report_date": day, "rows": int(entry.get("rows") or 0),
                "age_days": age, "fresh": age <= stale_after.days,
                "quality": "unknown" if q is None else "passed" if q["success"] else "failed",
                "failures": [] if q is None else list(q["failures"]),
                "checked_at": None if q is None else _json_value(q["checked_at"]),
            })
        if isinstance(targets, ReportError):
            problems.append(str(targets))
        else:
            bad = targets.filter(pc.equal(targets.column("status"), TARGET_FAILED))
            for r in bad.to_pylist():
                failed.append({"dag_id": dag_id, "report_date": str(latest["report_date"]), "target": r["target"],
                               "kind": r["kind"], "error": r["error"]})
        for p in problems:
            failed.append({"dag_id": dag_id, "report_date": str(latest["report_date"]), "target": "(record)",
                           "kind": "record", "error": p})
    return datasets, failed


def report_page(store: ReportStore, today: date | None = None, *, trend_days: int = TREND_DAYS,
                stale_after: timedelta = STALE_AFTER) -> JsonObject:
    """Everything the FinOps page shows, JSON-safe; ``status``: ``ok``, ``empty`` or ``uncommitted``."""
    try:
        return _report_page(store, today or datetime.now(UTC).date(), trend_days, stale_after)
    finally:
        _save_disk_cache(store)


def _report_page(store: ReportStore, today: date, trend_days: int, stale_after: timedelta) -> JsonObject:
    markers = page_markers(store, trend_days, today)
    cost = [m for m in markers.get(COST_DAG, []) if "cost_summary" in (m.get("datasets") or {})]
    newest = [(cost[-1], name) for name in ("cost_summary", "actions", COST_TREND)
              if cost and name in cost[-1]["datasets"]]
    # Every partition this page shows, read at once: each DAG's newest records and the newest cost report.
    kit = _kit_records(markers)
    tables = committed_tables(store, [*kit, *newest])
    datasets, failed = datasets_status(store, markers, today, stale_after, tables[:len(kit)])
    page: JsonObject = {"root": store.uri, "today": today.isoformat(), "datasets": datasets,
                        "failed_targets": failed, "report": None, "totals": None, "categories": [],
                        "actions": [], "trend": [], "status": "empty", "message": NOTHING_YET}
    if not cost:
        return page
    latest = cost[-1]
    try:
        shown = tables[len(kit):]
        trend_table = shown.pop() if COST_TREND in latest["datasets"] else None
        read = [t if isinstance(t, pa.Table) else _raise(t) for t in shown]
        summary = read[0].to_pylist()
        actions = _rows(read[1]) if len(read) > 1 else []
    except ReportError as exc:
        # A later run rewrote the partition and died before its marker: say so rather than mix two runs.
        page.update({"status": "uncommitted", "message": f"The newest cost report cannot be shown: {exc}. "
                     "Rerun finops_cost_report for that date."})
        return page
    actions.sort(key=lambda a: int(a["rank"]))
    for a in actions:
        a["artifact_href"] = artifact_href(store, str(a.get("artifact_uri") or ""))
    current = round(sum(float(r["current_monthly_usd"]) for r in summary), 2)
    projected = round(sum(float(r["projected_monthly_usd"]) for r in summary), 2)
    saving = round(sum(float(r["saving_monthly_usd"]) for r in summary), 2)
    page.update({
        "report": {"report_date": latest["report_date"], "run_id": latest.get("run_id"),
                   "committed_at": latest.get("committed_at"), "coverage": latest.get("coverage")},
        "totals": {"current": current, "projected": projected, "saving": saving,
                   "saving_pct": round(100 * saving / current, 1) if current else 0.0, "actions": len(actions)},
        "categories": _categories(summary), "actions": actions,
        "trend": trend_of(store, cost, trend_table, trend_days),
        "status": "ok" if summary else "empty", "message": "" if summary else NOTHING_IN_REPORT,
    })
    return page


# -- HTML ------------------------------------------------------------------------------------------------
def usd(value: Any) -> str:
    v = float(value)
    return f"-${-v:,.2f}" if v < 0 else f"${v:,.2f}"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def trend_svg(points: Sequence[Mapping[str, Any]], width: int = 720, height: int = 180) -> str:
    """An inline SVG line chart of current and projected $/month per report date."""
    if not points:
        return '<p class="muted" id="trend-empty">No trend yet.</p>'
    top = max(max(float(p["current"]), float(p["projected"])) for p in points) or 1.0
    pad, n = 30, len(points)

    def xy(i: int, v: float) -> str:
        x = pad + (width - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)
        y = height - pad - (height - 2 * pad) * (v / top)
        return f"{x:.1f},{y:.1f}"

    lines = []
    for key, colour in (("current", "#c0392b"), ("projected", "#2471a3")):
        pts = " ".join(xy(i, float(p[key])) for i, p in enumerate(points))
        lines.append(f'<polyline class="trend-{key}" fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
    return (f'<svg id="trend" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'data-points="{n}" role="img" aria-label="Monthly cost per report date">'
            f'<text x="{pad}" y="14" font-size="11">{_e(usd(top))}/month</text>'
            f'<text x="{pad}" y="{height - 8}" font-size="11">{_e(points[0]["report_date"])}</text>'
            f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">'
            f'{_e(points[-1]["report_date"])}</text>{"".join(lines)}</svg>'
            '<p class="legend"><span style="color:#c0392b">■ now</span> '
            '<span style="color:#2471a3">■ after the proposed actions</span></p>')


def _table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_STYLE = """body{font:14px system-ui,sans-serif;margin:16px;color:#222}h1{font-size:20px}h2{font-size:16px;
margin-top:24px}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.num{text-align:right}.muted{color:#777}.bad{color:#b03a2e;font-weight:600}.good{color:#1e8449}
.totals>span{display:inline-block;margin-right:24px;font-size:16px}.empty{padding:12px;background:#fef9e7}"""

# Tiny and local: shows how long ago the report was committed, in the reader's clock.
_SCRIPT = """document.querySelectorAll('[data-committed-at]').forEach(function(el){
var t=Date.parse(el.getAttribute('data-committed-at'));if(!isNaN(t)){
var h=Math.round((Date.now()-t)/3600000);el.textContent=' ('+(h<48?h+' h':Math.round(h/24)+' days')+' ago)';}});"""


def render_html(page: Mapping[str, Any]) -> str:
    """The FinOps page: plain HTML, an inline SVG chart and a tiny inline script; relative links only."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>FinOps</title><style>{_STYLE}</style>"
             "</head><body><h1>FinOps — observability cost</h1>",
             f'<p class="muted">Report root <code>{_e(page["root"])}</code> · '
             '<a href="api/report">JSON</a></p>']
    report, totals = page.get("report"), page.get("totals")
    if page["status"] != "ok" or not report or not totals:
        parts.append(f'<p class="empty" id="nothing">{_e(page["message"])}</p>')
    else:
        parts.append(f'<p id="report">Cost report <b>{_e(report["report_date"])}</b> · coverage '
                     f'{_e(report["coverage"])} · committed {_e(report["committed_at"])}'
                     f'<span data-committed-at="{_e(report["committed_at"])}"></span></p>')
        parts.append('<p class="totals">'
                     f'<span>Now <b id="total-current">{usd(totals["current"])}</b>/month</span>'
                     f'<span>After <b id="total-projected">{usd(totals["projected"])}</b>/month</span>'
                     f'<span>Saving <b id="total-saving">{usd(totals["saving"])}</b>/month '
                     f'(<span id="saving-pct">{totals["saving_pct"]}</span>%)</span></p>')
        parts.append("<h2>Saving by category</h2>" + _table("categories", ("category", "now", "after", "saving"), [
            (_e(c["category"]), usd(c["current"]), usd(c["projected"]),
             usd(c["saving"])) for c in page["categories"]]))
        parts.append("<h2>Trend</h2>" + trend_svg(page["trend"]))
        rows = []
        for a in page["actions"]:
            link = (f'<a href="{_e(a["artifact_href"])}">artifact</a>' if a.get("artifact_href")
                    else _e(a.get("artifact_uri") or "—"))
            rows.append((_e(a["rank"]), _e(a["kind"]), _e(a["target"]), _e(a["owner"]),
                         usd(a["monthly_saving_usd"]), _e(a["effort"]), _e(a["risk"]), _e(a["status"]), link))
        parts.append("<h2>Ranked actions</h2>" + _table(
            "actions", ("#", "kind", "target", "owner", "$/month", "effort", "risk", "status", "artifact"), rows))
    parts.append("<h2>Datasets</h2>" + (_table("datasets", (
        "dataset", "workflow", "newest", "age (days)", "rows", "fresh", "quality", "failed expectations"), [
        (_e(d["dataset"]), _e(d["dag_id"]), _e(d["report_date"]), _e(d["age_days"]), _e(d["rows"]),
         '<span class="good">yes</span>' if d["fresh"] else '<span class="bad">stale</span>',
         f'<span class="{"good" if d["quality"] == "passed" else "bad"}">{_e(d["quality"])}</span>',
         _e("; ".join(d["failures"]))) for d in page["datasets"]]) if page["datasets"]
        else '<p class="muted" id="no-datasets">No dataset committed yet.</p>'))
    parts.append("<h2>Failed targets of the last runs</h2>" + (_table(
        "failed-targets", ("workflow", "report date", "target", "kind", "error"),
        [(_e(f["dag_id"]), _e(f["report_date"]), _e(f["target"]), _e(f["kind"]), _e(f["error"]))
         for f in page["failed_targets"]]) if page["failed_targets"]
        else '<p class="good" id="no-failed-targets">None: every target of the last runs succeeded.</p>'))
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "".join(parts)


# -- the SLO deploy decision, for deploy pipelines (issue 13 item 5) -----------------------------------------
SLO_DAG = "finops_slo"


class DecisionNotFound(ReportError):
    """No committed ``finops_slo`` report, or none with a decision for the service asked for."""


class DecisionAmbiguous(ReportError):
    """Several sources/tenants have a decision for the service: the caller must say which."""


def slo_decision(store: ReportStore, service: str, source: str | None = None,
                 tenant: str | None = None) -> JsonObject:
    """The deploy decision of ``service`` in the newest committed ``finops_slo`` report: the decision JSON the DAG
    wrote beside it (``<source[-tenant]>-<service>.decision.json``), with that report's ``report_date``. Only
    the newest report counts — a service missing from it is not found, never answered from an older one."""
    from traceo_finops.slo.dataset import SLO_BUDGET, decision_filename

    # The markers the page reads (each DAG's newest, older ones only past a refused date): not all of them.
    markers = [m for m in page_markers(store).get(SLO_DAG, []) if SLO_BUDGET.name in (m.get("datasets") or {})]
    if not markers:
        raise DecisionNotFound(f"no committed {SLO_DAG} report under {store.uri}")
    marker = markers[-1]
    suffix = "-" + decision_filename(service)
    found: list[JsonObject] = []
    for uri in marker.get("artifacts") or []:
        if not str(uri).endswith(suffix):
            continue
        body = json.loads(read_artifact(store, str(uri)))
        if body.get("service") == service and source in (None, body.get("source")) \
                and tenant in (None, body.get("tenant")):
            found.append(body)
    where = f"the {SLO_DAG} report of {marker['report_date']}"
    if not found:
        which = "".join(f", {k} {v!r}" for k, v in (("source", source), ("tenant", tenant)) if v is not None)
        raise DecisionNotFound(f"service {service!r}{which} has no SLO decision in {where}")
    if len(found) > 1:
        places = ", ".join(f"source={b.get('source')!r} tenant={b.get('tenant')!r}" for b in found)
        raise DecisionAmbiguous(f"service {service!r} has a decision for each of {places} in {where}: "
                                "ask with source (and tenant)")
    return {**found[0], "report_date": marker["report_date"]}
