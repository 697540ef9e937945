"""The local stack that ``invsaga dev`` runs: Postgres and Temporal servers on free ports, and the
sandbox payment provider. Production code never imports it; only ``invsaga dev`` and
``invsaga payments serve`` load it, when they run."""
