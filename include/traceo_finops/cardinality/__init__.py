"""Cardinality audit: which series exist, per metric, per source and tenant, and what they cost."""
