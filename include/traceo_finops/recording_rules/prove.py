"""Proof that a suggested rule is right and worth it, on real servers.

For every group the recommender planned (``recommend.GroupPlan``):

1. **Valid rules.** The rule file passes ``promtool check rules`` (each rule alone when the whole file does
   not, so one bad rule does not sink the others).
2. **History.** Each rule's expression is evaluated on the source itself, as a range query every rule
   interval — exactly what Prometheus' rule manager (and ``promtool tsdb create-blocks-from rules``) computes
   at each evaluation — and written into a scratch TSDB with ``promtool tsdb create-blocks-from
   openmetrics``. We evaluate it ourselves instead of letting ``create-blocks-from rules`` do it because
   promtool 2.42 cannot send a Mimir tenant header or a bearer token, and because its evaluations carry the
   rule group's hash offset, so they never fall on the query's steps.
3. **Same result.** A private Prometheus (the ``prometheus`` binary, on a free 127.0.0.1 port) serves that
   TSDB. The original query runs on the source, the rewritten one on the private server, over the same range
   and steps: the logged query's range length and step (an instant query: the last 30 rule intervals),
   ending at the run window's end, on the rule's evaluation grid (a step that is not a multiple of the
   rule interval is rounded up to one). Every series and every point must match within the float tolerance;
   a point only the rewritten answer has, right after a series ends, comes from the backfill having no
   staleness markers (a live rule writes them) and is counted, not failed. An original answer with no data
   proves nothing and fails.
4. **Worth it.** The speedup is the median evaluation time (``stats=all``'s ``evalTotalTime``; the wall time
   of both when the source does not answer ``stats``) of the original query on the source over that of the
   rewritten query on the private server, after one warm-up run each, the runs taken in turns (original,
   rewritten, original, …) so both medians see the same load on a shared machine. The private server holds only the
   recorded series, so its index is smaller than the source's: on a server with millions of series the
   rewritten query's lookup costs somewhat more than measured here.
5. **What it adds.** The rule's series: ``count(expr)`` on the source at the proof's end.

A group that fails any step gets the reason and no rule; nothing here raises for a bad candidate. A missing
binary or a private server that does not start raises :class:`~.errors.ProofUnavailable` (the target fails).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from traceo_finops.prometheus import PrometheusError
from traceo_finops.prometheus.runner import QueryRunner
from traceo_finops.prometheus.spec import SourceSpec
from traceo_finops.recording_rules.collect import (
    Matrix,
    NoStats,
    StatsClient,
    paired_medians,
    range_query,
    series_count,
)
from traceo_finops.recording_rules.errors import ProofUnavailable
from traceo_finops.recording_rules.recommend import GroupPlan, RuleSpec
from traceo_finops.shapes import Json

log = logging.getLogger(__name__)

INSTANT_POINTS = 30  # an instant query is proven at this many rule evaluations before the window's end
MAX_POINTS = 10_000  # per series and query (Prometheus refuses more than 11,000)
STALENESS = 300  # seconds: Prometheus' default lookback delta
READY_TIMEOUT = 60.0
# Every query the proof sends to the source starts with this comment: the next run finds them in the query log
# and leaves them out (they are ours, not users').
OWN_QUERY_MARK = "# traceo-finops"
PROOF_MARK = f"{OWN_QUERY_MARK} recording-rules proof\n"


@dataclass(frozen=True)
class ProofSettings:
    interval: int  # rule evaluation interval, seconds
    runs: int  # timed runs of each query
    tolerance: float  # relative (and absolute, for values near zero) float tolerance
    promtool: str
    prometheus: str
    group_name: str


@dataclass(frozen=True)
class ProofRange:
    start: int
    end: int
    step: int
    instant: bool

    @property
    def points(self) -> int:
        return (self.end - self.start) // self.step + 1


def proof_range(shape: tuple[float, float], end: float, interval: int) -> ProofRange:
    """Where a query of ``shape`` (range, step seconds; (0, 0) = instant) is proven: its own length and step
    ending at ``end``, on the rule's evaluation grid."""
    range_s, step_s = shape
    if step_s > 0:
        step = interval * max(1, math.ceil(step_s / interval))
        points = min(MAX_POINTS, int(range_s // step) + 1)
        instant = False
    else:
        step, points, instant = interval, INSTANT_POINTS, True
    last = int(end // step) * step
    return ProofRange(last - (points - 1) * step, last, step, instant)


@dataclass
class GroupProof:
    """The outcome of one group's proof."""

    ok: bool = False
    reason: str = ""
    range: ProofRange | None = None
    points: int = 0  # compared points
    series: int = 0  # compared series
    stale_extra: int = 0  # points only the rewritten answer has, right after a series ends (no staleness markers)
    original_seconds: float | None = None
    rewritten_seconds: float | None = None

    @property
    def speedup(self) -> float | None:
        if not self.original_seconds or not self.rewritten_seconds:
            return None
        return self.original_seconds / self.rewritten_seconds


@dataclass
class ProofReport:
    groups: dict[str, GroupProof] = field(default_factory=dict)  # group key -> proof
    new_series: dict[str, int] = field(default_factory=dict)  # rule name -> series it adds
    rule_errors: dict[str, str] = field(default_factory=dict)  # rule name -> why it cannot be used


# -- rule files ----------------------------------------------------------------------------------------------
def rule_groups(rules: Sequence[RuleSpec], group_name: str, interval: int) -> dict[str, Json]:
    return {"groups": [{"name": group_name, "interval": f"{interval}s",
                        "rules": [{"record": r.name, "expr": r.expr} for r in rules]}]}


def rule_file_yaml(rules: Sequence[RuleSpec], group_name: str, interval: int) -> str:
    """A Prometheus rule file (``rule_files:``) with one group evaluated every ``interval`` seconds."""
    return yaml.safe_dump(rule_groups(rules, group_name, interval), sort_keys=False, width=1000)


def mimir_namespace_yaml(rules: Sequence[RuleSpec], namespace: str, group_name: str, interval: int) -> str:
    """The same group as a Mimir ruler namespace file (``mimirtool rules load``)."""
    return yaml.safe_dump({"namespace": namespace, **rule_groups(rules, group_name, interval)}, sort_keys=False,
                          width=1000)


def check_rules(promtool: str, rules: Sequence[RuleSpec], group_name: str, interval: int,
                workdir: Path) -> dict[str, str]:
    """``promtool check rules``: rule name -> its error, for the rules that fail (empty when all pass)."""

    def check(subset: Sequence[RuleSpec], name: str) -> str:
        path = workdir / name
        path.write_text(rule_file_yaml(subset, group_name, interval))
        out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        return "" if out.returncode == 0 else (out.stdout + out.stderr).strip()

    if not rules or not check(rules, "rules.yml"):
        return {}
    errors = {}
    for i, r in enumerate(rules):
        problem = check([r], f"rule-{i}.yml")
        if problem:
            errors[r.name] = f"promtool check rules failed: {problem[-500:]}"
    return errors or {r.name: "promtool check rules failed on the rules together" for r in rules}


# -- history ------------------------------------------------------------------------------------------------
def _om_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics(series: Mapping[str, Matrix]) -> tuple[str, int]:
    """OpenMetrics text (``# EOF``-terminated) of each rule's recorded series, and how many samples it holds."""
    lines: list[str] = []
    samples = 0
    for name, matrix in series.items():
        if not matrix:
            continue
        lines.append(f"# TYPE {name} gauge")
        for s in matrix:
            labels = ",".join(f'{k}="{_om_label_value(str(v))}"' for k, v in sorted(s["metric"].items())
                              if k != "__name__")
            for ts, value in s["values"]:
                lines.append(f"{name}{{{labels}}} {value} {int(float(ts))}")
                samples += 1
    lines.append("# EOF")
    return "\n".join(lines) + "\n", samples


def create_blocks(promtool: str, text: str, workdir: Path) -> Path:
    """``promtool tsdb create-blocks-from openmetrics`` into ``workdir/data``."""
    source, data = workdir / "rules.om", workdir / "data"
    source.write_text(text)
    data.mkdir(exist_ok=True)
    out = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(source), str(data)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise ProofUnavailable(f"promtool could not write the rules' history: {(out.stdout + out.stderr)[-500:]}")
    source.unlink()
    return data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def private_prometheus(binary: str, data: Path, workdir: Path) -> Iterator[str]:
    """A Prometheus of our own on 127.0.0.1 over ``data`` (nothing scraped); yields its URL, stops it after."""
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\n")
    logfile = workdir / "prometheus.log"
    for _attempt in range(3):  # a port taken between our probe and the bind: try another
        port = _free_port()
        with open(logfile, "wb") as out:
            proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
                 f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=36500d",
                 "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            if _wait_ready(url, proc):
                yield url
                return
        finally:
            _stop(proc)
        tail = logfile.read_text(errors="replace")[-500:]
        if "address already in use" not in tail:
            raise ProofUnavailable(f"the private Prometheus ({binary}) did not start: {tail}")
    raise ProofUnavailable("the private Prometheus found no free port")


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(f"{url}/-/ready", timeout=2).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the process we started, nothing else
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


# -- comparing answers --------------------------------------------------------------------------------------
def _by_series(matrix: Matrix) -> dict[tuple[tuple[str, str], ...], dict[int, float]]:
    return {tuple(sorted(s["metric"].items())): {round(float(t) * 1000): float(v) for t, v in s["values"]}
            for s in matrix}


def _same(a: float, b: float, tolerance: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance * 1e-3)


def _labels(key: tuple[tuple[str, str], ...]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in key) + "}"


def compare(original: Matrix, rewritten: Matrix, tolerance: float) -> GroupProof:
    """Whether two range answers are the same within ``tolerance``; the first difference is the reason."""
    a, b = _by_series(original), _by_series(rewritten)
    proof = GroupProof()
    if not any(a.values()):
        proof.reason = "the original query returns no data over the proof range: nothing to prove"
        return proof
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        proof.reason = (f"the answers have different series: {len(only_a)} only in the original "
                        f"({', '.join(map(_labels, only_a[:2]))}), {len(only_b)} only in the rewritten "
                        f"({', '.join(map(_labels, only_b[:2]))})")
        return proof
    for key, points in a.items():
        other = b[key]
        missing = sorted(set(points) - set(other))
        if missing:
            proof.reason = (f"the rewritten answer lacks {len(missing)} point(s) of {_labels(key)}, first at "
                            f"{missing[0] / 1000:.0f}")
            return proof
        last_seen: int | None = None
        for t in sorted(set(points) | set(other)):
            if t in points:
                last_seen = t
                if not _same(points[t], other[t], tolerance):
                    proof.reason = (f"values differ for {_labels(key)} at {t / 1000:.0f}: original {points[t]!r}, "
                                    f"rewritten {other[t]!r} (tolerance {tolerance:g})")
                    return proof
                proof.points += 1
            elif last_seen is not None and t - last_seen <= STALENESS * 1000:
                proof.stale_extra += 1
            else:
                proof.reason = (f"the rewritten answer has a point the original lacks for {_labels(key)} at "
                                f"{t / 1000:.0f}")
                return proof
    proof.series = len(a)
    proof.ok = True
    return proof


# -- the whole proof ----------------------------------------------------------------------------------------
@dataclass
class _Need:
    rule: RuleSpec
    start: int
    end: int


def prove(plans: Sequence[GroupPlan], source: QueryRunner, shapes: Mapping[str, tuple[float, float]], end: float,
          settings: ProofSettings, min_speedup: float, max_new_series: int) -> ProofReport:
    """Prove every plan that has new rules and no reason against it (``shapes``: group key -> its
    representative's (range, step)); ``end`` is the run window's end (Unix seconds)."""
    report = ProofReport()
    todo = [p for p in plans if not p.reason and p.new_rules]
    if not todo:
        return report
    for binary in (settings.promtool, settings.prometheus):
        if shutil.which(binary) is None:
            raise ProofUnavailable(f"{binary} is not installed or not executable here: the proof needs promtool "
                                   "and prometheus (workflows.recording_rules.promtool / .prometheus)")
    with tempfile.TemporaryDirectory(prefix="traceo-recording-rules-") as tmp:
        workdir = Path(tmp)
        new_rules = list(dict.fromkeys(r for p in todo for r in p.new_rules))
        report.rule_errors.update(check_rules(settings.promtool, new_rules, settings.group_name, settings.interval,
                                              workdir))
        needs: dict[str, _Need] = {}
        ranges: dict[str, ProofRange] = {}
        for plan in todo:
            bad = [r.name for r in plan.new_rules if r.name in report.rule_errors]
            if bad:
                report.groups[plan.group.key] = GroupProof(reason=report.rule_errors[bad[0]])
                continue
            pr = ranges[plan.group.key] = proof_range(shapes[plan.group.key], end, settings.interval)
            for sp in plan.sites:  # new rules and the existing rules the rewritten query reads
                need = needs.get(sp.spec.name)
                if need is None:
                    needs[sp.spec.name] = _Need(sp.spec, pr.start, pr.end)
                else:
                    need.start, need.end = min(need.start, pr.start), max(need.end, pr.end)
        recorded: dict[str, Matrix] = {}
        for name, need in needs.items():
            try:
                recorded[name] = range_query(source, PROOF_MARK + need.rule.expr, need.start, need.end,
                                             settings.interval)
            except PrometheusError as exc:
                report.rule_errors[name] = f"evaluating the rule on the source failed: {exc}"
        text, samples = openmetrics(recorded)
        if samples:
            data = create_blocks(settings.promtool, text, workdir)
        else:
            data = workdir / "data"
            data.mkdir(exist_ok=True)
        with private_prometheus(settings.prometheus, data, workdir) as url, \
                QueryRunner(SourceSpec(name="proof", base_url=url, timeout=120)) as private, \
                StatsClient(source.spec) as source_timer, StatsClient(private.spec) as private_timer:
            for plan in todo:
                key = plan.group.key
                if key in report.groups:
                    continue
                bad = [sp.spec.name for sp in plan.sites if sp.spec.name in report.rule_errors]
                if bad:
                    report.groups[key] = GroupProof(reason=report.rule_errors[bad[0]])
                    continue
                report.groups[key] = _prove_group(plan, ranges[key], source, private, source_timer, private_timer,
                                                  settings, min_speedup)
        for rule in new_rules:
            if rule.name in report.rule_errors:
                continue
            try:
                at = int(end // settings.interval) * settings.interval
                report.new_series[rule.name] = series_count(source, rule.expr, at, PROOF_MARK)
            except PrometheusError as exc:
                report.rule_errors[rule.name] = f"counting the rule's series failed: {exc}"
        for plan in todo:
            proof = report.groups[plan.group.key]
            too_many = [(r.name, report.new_series.get(r.name, 0)) for r in plan.new_rules
                        if report.new_series.get(r.name, 0) > max_new_series]
            if proof.ok and too_many:
                proof.ok = False
                proof.reason = (f"rule {too_many[0][0]} would add {too_many[0][1]:,} series, more than "
                                f"max_new_series ({max_new_series:,})")
    return report


def _prove_group(plan: GroupPlan, pr: ProofRange, source: QueryRunner, private: QueryRunner,
                 source_timer: StatsClient, private_timer: StatsClient, settings: ProofSettings,
                 min_speedup: float) -> GroupProof:
    try:
        original = range_query(source, PROOF_MARK + plan.text, pr.start, pr.end, pr.step)
    except PrometheusError as exc:
        return GroupProof(reason=f"the original query failed on the source: {exc}", range=pr)
    try:
        rewritten = range_query(private, plan.rewritten, pr.start, pr.end, pr.step)
    except PrometheusError as exc:
        return GroupProof(reason=f"the rewritten query failed: {exc}", range=pr)
    proof = compare(original, rewritten, settings.tolerance)
    proof.range = pr
    if not proof.ok:
        return proof
    def timed(timer: StatsClient, query: str, wall: bool) -> float:
        if pr.instant:
            return timer.eval_seconds(query, time=pr.end, wall=wall)
        return timer.eval_seconds(query, start=pr.start, end=pr.end, step=pr.step, wall=wall)

    marked = PROOF_MARK + plan.text
    try:
        try:
            timed(source_timer, marked, False)
            wall = False
        except NoStats:  # e.g. a Mimir query-frontend: wall time on both sides, never one of each
            wall = True
        proof.original_seconds, proof.rewritten_seconds = paired_medians(
            lambda: timed(source_timer, marked, wall), lambda: timed(private_timer, plan.rewritten, wall),
            settings.runs)
    except PrometheusError as exc:
        proof.ok, proof.reason = False, f"timing the queries failed: {exc}"
        return proof
    speedup = proof.speedup
    if speedup is None or speedup < min_speedup:
        proof.ok = False
        proof.reason = (f"proven equal but not fast enough: {speedup or 0:.2f}x < min_speedup {min_speedup:g}x "
                        f"(original {proof.original_seconds or 0:.6f} s, "
                        f"rewritten {proof.rewritten_seconds or 0:.6f} s)")
    log.info("group %s: %s over %d points, original %.6f s, rewritten %.6f s", plan.group.key[:80],
             "proven" if proof.ok else proof.reason, proof.points, proof.original_seconds or 0,
             proof.rewritten_seconds or 0)
    return proof
