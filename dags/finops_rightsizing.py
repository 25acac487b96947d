"""
### finops_rightsizing — container requests sized from Prometheus/Mimir alone, priced in dollars

Daily, for every Prometheus source and Mimir tenant in the configuration, over the last
`workflows.rightsizing.history` (default 14 days) up to the end of the run's data interval:

1. **plan** — per source/tenant: check that kube-state-metrics and cAdvisor are there (a missing metric
   is that source's recorded error, naming the metric), detect the scrape interval, choose the query
   resolution (≤ 11,000 points per series) and cut the namespaces into batches that stay under the
   server's sample limit;
2. **collect** — one mapped task per namespace batch: kube-state-metrics discovery (pod → ReplicaSet →
   Deployment / StatefulSet / DaemonSet / Job / CronJob / bare pod, requests, limits, restarts, OOM
   kills, replicas, HPAs) and usage computed **on the server** (CPU p50/p90/p95/p99/max of the rate,
   working-set peak and p99, sample counts) — never raw samples. A batch the server times out on is
   split in two and retried;
3. **size_stack** — the observability stack's own processes (Prometheus, Mimir…) that do not run on
   Kubernetes, from `process_cpu_seconds_total` and Go memory stats, each source at its own resolution;
4. **write_report** — recommend (percentile × margin for CPU, peak × margin or last OOM limit × 1.2 for
   memory), a VPA-style confidence and a status per container, monthly dollars from the pricing table;
   check with Great Expectations and publish the `rightsizing` partition, with kubectl strategic-merge
   patches (and optional VPA objects) beside it;
5. **post_digest** — totals and the biggest savings to Slack (`slack_finops`), once per run;
6. **verdict** — fails the run, without retries, if a source or batch failed (the rest is reported, and
   `run_targets` says which failed and why).

Params `history` (e.g. `4d`) and `end` (an ISO time) size a different window than the scheduled one.
How it decides, and the patches: `docs/rightsizing.md`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from traceo_finops import airflow_adapter as kit

PARAMS = {
    "history": Param("", type="string", description="Usage history to size from, e.g. 4d; empty: "
                                                    "workflows.rightsizing.history."),
    "end": Param("", type="string", description="End of the history as an ISO time with zone; empty: the end "
                                                "of the run's window."),
}


@dag(schedule=kit.daily(), **kit.workflow_dag("finops_rightsizing", __doc__, tags=["rightsizing", "kubernetes"],
                                              params=PARAMS))
def finops_rightsizing() -> None:
    @task
    def plan() -> dict:
        """Resolution and namespace batches of every source/tenant."""
        return kit.step("rightsizing", "targets")

    @task
    def batches(planned: dict) -> list[dict]:
        """The namespace batches to map `collect` over."""
        return planned["batches"]

    @task(map_index_template="{{ task.op_kwargs['target']['label'] }}")
    def collect(target: dict) -> dict:
        """Discovery and server-side usage statistics of one namespace batch."""
        return kit.target_step("rightsizing", "collect", target)

    @task
    def size_stack(planned: dict) -> list[dict]:
        """The observability stack's own processes (not on Kubernetes), each source at its own resolution."""
        return kit.step("rightsizing", "size_stack", planned["plans"])

    @task(outlets=kit.assets("rightsizing", "run_targets", "quality_checks"))
    def write_report(planned: dict, pieces: list[dict], stack: list[dict]) -> dict:
        """Recommend, price, check and publish the `rightsizing` partition and the patches beside it."""
        return kit.publish_step("rightsizing", planned, list(pieces), stack)

    planned = plan()
    pieces = collect.expand(target=batches(planned))
    written = write_report(planned, pieces, size_stack(planned))
    kit.digest_and_verdict("rightsizing", written)


finops_rightsizing()
