"""The FastAPI app of the FinOps page (mounted by the api-server through ``finops_plugin.py``)."""
