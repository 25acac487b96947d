"""Who uses which metric and label: rules, Grafana dashboards and query history, parsed with promql-parser.

Typical use (one index per source/tenant and window)::

    index = UsageIndex(exclude_query=lambda q: q in OWN_QUERIES)
    for path in rule_files: index.add_rule_file(path)
    index.add_rules_api(client.rules())
    for path in dashboards: index.add_dashboard_file(path, library_panels=library)
    index.add_prometheus_query_log("/var/log/prometheus/query.log", window.start, window.end)
    index.metric_used("http_requests_total"); index.labels_needed("http_requests_total")  # {"job"} or ALL
    index.errors  # every file, log line and expression that could not be read
    index.unparsed_hold("http_requests_total")  # an expression that does not parse and may read it, or None

Pure library: no Airflow, no network.
"""

from traceo_finops.usage.grafana import (
    Variable,
    dashboard_file_occurrences,
    dashboard_occurrences,
    substitute,
    variable_query_analysis,
)
from traceo_finops.usage.index import Usage, UsageCounts, UsageIndex, query_source
from traceo_finops.usage.model import (
    ALL,
    AllLabels,
    ExpressionAnalysis,
    LabelMatcher,
    LabelNeed,
    Mentions,
    NameMatcher,
    NamePattern,
    Occurrence,
    ParseError,
    SelectorUsage,
    SkippedQuery,
    Source,
    SourceKind,
    UsageKind,
    union_need,
)
from traceo_finops.usage.promql import PromQLAnalyzer, analyze_expression, analyze_selector
from traceo_finops.usage.querylog import (
    QueryLogSummary,
    RuleEvaluation,
    parse_logfmt,
    read_mimir_query_stats,
    read_prometheus_query_log,
)
from traceo_finops.usage.rules import (
    rule_file_occurrences,
    rule_groups_occurrences,
    rule_text_occurrences,
    ruler_occurrences,
    rules_api_occurrences,
)

__all__ = [
    "ALL",
    "AllLabels",
    "ExpressionAnalysis",
    "LabelMatcher",
    "LabelNeed",
    "Mentions",
    "NameMatcher",
    "NamePattern",
    "Occurrence",
    "ParseError",
    "PromQLAnalyzer",
    "QueryLogSummary",
    "RuleEvaluation",
    "SelectorUsage",
    "SkippedQuery",
    "Source",
    "SourceKind",
    "Usage",
    "UsageCounts",
    "UsageIndex",
    "UsageKind",
    "Variable",
    "analyze_expression",
    "analyze_selector",
    "dashboard_file_occurrences",
    "dashboard_occurrences",
    "parse_logfmt",
    "query_source",
    "read_mimir_query_stats",
    "read_prometheus_query_log",
    "rule_file_occurrences",
    "rule_groups_occurrences",
    "rule_text_occurrences",
    "ruler_occurrences",
    "rules_api_occurrences",
    "substitute",
    "union_need",
    "variable_query_analysis",
]
