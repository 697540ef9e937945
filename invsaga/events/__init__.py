"""Stock and order events: the outboxes' sources, the pull feed, webhooks, and the relay that stamps
and delivers them (see invsaga/store/schema/shard_004.sql and core_005.sql for the tables)."""
