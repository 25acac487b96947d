"""The local stack of real services the tests and the demo run against.

Everything binds to 127.0.0.1 and lives under one state folder (default ``.devstack/``
at the project root, env ``DEVSTACK_DIR``). Nothing here is part of the product: it
only makes a deterministic, seeded world for the product to observe.
"""
