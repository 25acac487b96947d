"""finops_recording_rules: recording rules mined from query logs, proven equivalent, with measured speedup."""
