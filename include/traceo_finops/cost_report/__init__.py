"""finops_cost_report: what the whole observability stack costs, what to do next, and what changed."""
