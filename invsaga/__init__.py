"""inventory-saga: sharded stock on PostgreSQL, sold through a checkout saga on Temporal.

The layers, bottom up (``tests/unit/test_layers.py`` holds the code to them): ``domain`` and
``settings``; ``temporal``, ``store``, ``payments`` and the services' ``client``; the reconciler
(``reconcile``); then the top-level ``activities``, ``workflows`` and ``workers``; ``api`` and ``cli``
on top. ``dev`` is the local stack, which production code never imports.
"""
