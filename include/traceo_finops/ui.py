"""The FinOps page's figures, read from the committed report lake (local disk or S3), and its HTML.

:func:`report_page` returns everything the page shows as one JSON-safe dict: the newest committed
cost report's totals, saving by category, the ranked actions with links to their artifacts, the
trend of daily totals over every committed cost report, each dataset's freshness and quality-check
status, and the failed targets of each workflow's last run. :func:`render_html` turns it into the page.

Only committed data is read: a partition counts when its ``run_id`` is the one its DAG's commit
marker names (the rule of :func:`traceo_finops.kit.publish.read_committed`, applied here to markers
already in hand, so a year of partitions costs one listing of ``_commits/`` and not one per read).
Markers and trend points are cached by file path, size and mtime: a warm page reads only what changed.
"""

from __future__ import annotations

import html
import json
import posixpath
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypedDict
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from traceo_finops.kit.datasets import QUALITY_CHECKS, RUN_TARGETS, TARGET_FAILED
from traceo_finops.kit.publish import COMMITS_DIR
from traceo_finops.reports import ARTIFACTS_DIR, PART_FILE, RUN_ID_COLUMN, ReportError, ReportStore
from traceo_finops.shapes import JsonObject

COST_DAG = "finops_cost_report"
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


_lock = threading.Lock()
_marker_cache: dict[tuple[str, int, int], JsonObject] = {}
_trend_cache: dict[tuple[str, int, int, str], tuple[float, float, float]] = {}


def _info_key(info: pafs.FileInfo) -> tuple[str, int, int]:
    return (info.path, int(info.size or 0), int(info.mtime_ns or 0))


def _load_marker(store: ReportStore, info: pafs.FileInfo) -> JsonObject | None:
    key = _info_key(info)
    with _lock:
        if key in _marker_cache:
            return _marker_cache[key]
    raw = store.read_file(info.path)
    try:
        marker = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(marker, dict):
        return None
    with _lock:
        _marker_cache[key] = marker
    return marker


def markers_by_dag(store: ReportStore) -> dict[str, list[JsonObject]]:
    """dag_id -> its commit markers, oldest report date first (one listing of ``_commits/``)."""
    selector = pafs.FileSelector(store.path(COMMITS_DIR), recursive=True, allow_not_found=True)
    out: dict[str, list[JsonObject]] = {}
    for info in store.fs.get_file_info(selector):
        if info.type != pafs.FileType.File or not info.base_name.startswith("report_date="):
            continue
        if not info.base_name.endswith(".json"):
            continue
        marker = _load_marker(store, info)
        if marker and marker.get("dag_id") and marker.get("report_date"):
            out.setdefault(str(marker["dag_id"]), []).append(marker)
    for markers in out.values():
        markers.sort(key=lambda m: str(m["report_date"]))
    return out


def committed_table(store: ReportStore, marker: Mapping[str, Any], dataset: str) -> pa.Table:
    """``dataset``'s partition named by ``marker`` if it holds that run's rows; else :class:`ReportError`."""
    entry = (marker.get("datasets") or {}).get(dataset)
    if not entry:
        raise ReportError(f"{marker.get('dag_id')} {marker.get('report_date')} did not commit {dataset!r}")
    day = date.fromisoformat(str(marker["report_date"]))
    table = store.read_partition(dataset, day, entry.get("partition") or None)
    file_run = (table.schema.metadata or {}).get(b"traceo.run_id", b"").decode()
    runs = set(table.column(RUN_ID_COLUMN).to_pylist()) if RUN_ID_COLUMN in table.column_names else set()
    runs |= {file_run} if file_run else set()
    committed_run = entry.get("run_id", marker.get("run_id"))
    if runs != {committed_run}:
        raise ReportError(f"dataset {dataset!r} {day} is uncommitted: the partition comes from run(s) "
                          f"{sorted(runs) or 'unknown'}, the committed run is {committed_run!r}")
    return table


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


def trend(store: ReportStore, cost_markers: Sequence[Mapping[str, Any]], days: int = TREND_DAYS) -> list[JsonObject]:
    """Daily totals (current, projected, saving $/month) of the last ``days`` committed cost reports.

    Reads three columns of each committed ``cost_summary`` partition at once (pyarrow dataset, threaded);
    a partition already summed is taken from the cache while its file is unchanged.
    """
    wanted = [m for m in cost_markers if "cost_summary" in (m.get("datasets") or {})][-days:]
    if not wanted:
        return []
    base = store.path("cost_summary")
    infos = {i.path: i for i in store.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
             if i.type == pafs.FileType.File}
    points: dict[str, tuple[float, float, float]] = {}
    todo: dict[str, tuple[str, str, tuple[str, int, int]]] = {}  # path -> (report date, committed run, key)
    for m in wanted:
        day = str(m["report_date"])
        path = posixpath.join(base, f"report_date={day}", PART_FILE)
        if path not in infos:
            continue
        run = str(m["datasets"]["cost_summary"].get("run_id", m.get("run_id")))
        key = _info_key(infos[path])
        with _lock:
            cached = _trend_cache.get((*key, run))
        if cached is not None:
            points[day] = cached
        else:
            todo[path] = (day, run, key)
    if todo:
        data = pads.dataset(sorted(todo), filesystem=store.fs, format="parquet", partition_base_dir=base,
                            partitioning=pads.partitioning(pa.schema([("report_date", pa.string())]), flavor="hive"))
        cols = ["current_monthly_usd", "projected_monthly_usd", "saving_monthly_usd"]
        table = data.to_table(columns=[*cols, RUN_ID_COLUMN, "report_date"])
        sums = table.group_by(["report_date", RUN_ID_COLUMN]).aggregate([(c, "sum") for c in cols]).to_pylist()
        found: dict[str, list[dict[str, Any]]] = {}
        for row in sums:
            found.setdefault(str(row["report_date"]), []).append(row)
        for day, run, key in todo.values():
            rows = found.get(day, [])
            if len(rows) != 1 or rows[0][RUN_ID_COLUMN] != run:
                continue  # empty (nothing to report that day) or not the committed run: no point
            point = tuple(round(float(rows[0][f"{c}_sum"] or 0.0), 2) for c in cols)
            points[day] = (point[0], point[1], point[2])
            with _lock:
                _trend_cache[(*key, run)] = points[day]
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


def datasets_status(store: ReportStore, markers: Mapping[str, Sequence[Mapping[str, Any]]], today: date,
                    stale_after: timedelta = STALE_AFTER) -> tuple[list[JsonObject], list[JsonObject]]:
    """Each dataset's newest committed partition, its age and quality status; and the failed targets.

    Both come from each DAG's newest commit marker: its ``quality_checks`` record (a refused set names
    the failed expectations there, while the previous partition stays committed) and its ``run_targets``.
    """
    datasets: list[JsonObject] = []
    failed: list[JsonObject] = []
    for dag_id, dag_markers in sorted(markers.items()):
        latest = dag_markers[-1]
        quality: dict[str, Mapping[str, Any]] = {}
        problems: list[str] = []
        try:
            quality = {str(r["dataset"]): r for r in committed_table(store, latest, QUALITY_CHECKS.name).to_pylist()}
        except ReportError as exc:
            problems.append(str(exc))
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
        try:
            targets = committed_table(store, latest, RUN_TARGETS.name)
        except ReportError as exc:
            problems.append(str(exc))
            targets = None
        if targets is not None:
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
    today = today or datetime.now(UTC).date()
    markers = markers_by_dag(store)
    datasets, failed = datasets_status(store, markers, today, stale_after)
    page: JsonObject = {"root": store.uri, "today": today.isoformat(), "datasets": datasets,
                        "failed_targets": failed, "report": None, "totals": None, "categories": [],
                        "actions": [], "trend": [], "status": "empty", "message": NOTHING_YET}
    cost = [m for m in markers.get(COST_DAG, []) if "cost_summary" in (m.get("datasets") or {})]
    if not cost:
        return page
    latest = cost[-1]
    try:
        summary = committed_table(store, latest, "cost_summary").to_pylist()
        actions = _rows(committed_table(store, latest, "actions")) if "actions" in latest["datasets"] else []
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
        "categories": _categories(summary), "actions": actions, "trend": trend(store, cost, trend_days),
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
