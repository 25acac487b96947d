"""Block-aware S3 tiering for Mimir/Thanos buckets: plan lifecycle rules that pay off, apply them safely.

Modules, in the order a run uses them:

- :mod:`.inventory` — what a bucket holds (its S3 Inventory, streamed with pyarrow, when one is
  configured and fresh, else ListObjectsV2), folded into groups by tenant, block, role, storage
  class, size band and age;
- :mod:`.layout` — ULIDs, object roles, meta.json and the Mimir bucket index;
- :mod:`.blocks` — block time ranges and deletion marks read from the bucket;
- :mod:`.costs` — the cost model over the price table;
- :mod:`.recommend` — which transitions pay off safely, per tenant prefix or bucket;
- :mod:`.lifecycle` — the ``finops-`` rules, merge with foreign rules, validation, diff;
- :mod:`.apply` — safe apply with backup, read-back verification and rollback;
- :mod:`.dataset` — the ``s3_tiering`` report dataset and the Slack digest;
- :mod:`.workflow` — the steps of the ``finops_s3_tiering`` DAG as plain functions.

Rollback from a shell: ``python -m traceo_finops.s3tiering rollback --bucket B --backup URI``.
"""
