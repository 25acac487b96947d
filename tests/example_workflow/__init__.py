"""A tiny workflow built only from the kit: which scrape targets of each Prometheus source are up.

It is the example of ``docs/add-a-workflow.md``, run by ``tests/test_kit_example_workflow.py``.
"""
