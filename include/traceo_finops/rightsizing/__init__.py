"""Container right-sizing from Prometheus/Mimir alone: kube-state-metrics discovery, server-side usage
statistics in namespace batches, a pure recommender with a VPA-style confidence, dollars, patches.

Modules: ``queries`` (PromQL, resolution, batches) · ``collect`` (plan and one batch, split-and-retry) ·
``model`` (mergeable per-container pieces) · ``recommend`` (pure maths) · ``stack`` (Prometheus/Mimir
processes) · ``dataset`` (the ``rightsizing`` report, digest) · ``manifests`` (patches, VPA objects) ·
``workflow`` (the DAG's steps). How it works and why: ``docs/rightsizing.md``.
"""
