"""finops_slo: SLO specs to tested MWMB rules, Alertmanager routing, error budgets and the deploy decision."""
