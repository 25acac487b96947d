"""
### finops_slo — SLO rules and routing, error budgets and the deploy decision

Daily, for every Prometheus source and Mimir tenant with SLO spec files (`workflows.slo.specs`, Sloth's
`prometheus/v1` plus Traceo's `tier`):

1. **targets** — the sources/tenants whose spec patterns match a file;
2. **evaluate** — one mapped task each: load and validate its specs (an invalid file fails the target, naming
   the file, before anything is generated); generate the multi-window multi-burn-rate rules (Prometheus rule
   file and Mimir ruler namespace) and the Alertmanager fragment, proven with `promtool check rules`, a
   generated `promtool test rules` per SLO and `amtool check-config`; measure each SLO's SLI over its period
   on the source: budget remaining (request-weighted; no data is `unknown`, never 100 %), burn rate per
   window, time to exhaustion, deploy decision;
3. **write_report** — check and publish `slo_budget` for this run's report date as one committed set (a rerun
   replaces it), with the rule files, `alertmanager.yml` and a decision JSON per service beside it;
4. **post_digest** — a line per SLO to Slack (`slack_finops`), once per run;
5. **verdict** — fails the run, without retries, if a source/tenant failed.

Nothing is applied: the rules and routing are files to review and load. How: `docs/slo.md`.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from traceo_finops import airflow_adapter as kit

WORKFLOW = "slo"


@dag(schedule=kit.daily(), **kit.workflow_dag("finops_slo", __doc__, tags=["slo", "alerting"]))
def finops_slo() -> None:
    @task
    def targets() -> list[dict]:
        """One target per source and Mimir tenant with SLO specs."""
        return kit.step(WORKFLOW, "targets")

    @task(map_index_template="{{ task.op_kwargs['target']['label'] }}")
    def evaluate(target: dict) -> dict:
        """Specs, proven rules and routing, and every SLO's budget and decision for one source/tenant."""
        return kit.target_step(WORKFLOW, "evaluate", target)

    @task(outlets=kit.assets("slo_budget", "run_targets", "quality_checks"))
    def write_report(evaluated: list[dict]) -> dict:
        """Check and publish slo_budget of this run's report date, with the rules and decision files beside it."""
        return kit.publish_step(WORKFLOW, list(evaluated))

    written = write_report(evaluate.expand(target=targets()))
    kit.digest_and_verdict(WORKFLOW, written)


finops_slo()
