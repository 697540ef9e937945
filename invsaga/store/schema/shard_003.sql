-- Inventory shard, version 3: holds a paying checkout owns are pinned, and the sweeper skips them.
--
-- Before its charge a checkout pins every hold of its order on the shard (all of them or none), so a
-- hold can no longer expire between the charge and the commit, however long a worker is away. A
-- pinned hold ends only through its checkout (commit or release) or the order reconciler, which
-- releases the pinned holds of a checkout that no longer runs.
ALTER TABLE reservations ADD COLUMN pinned_at timestamptz;

DROP INDEX reservations_due_for_expiry;
CREATE INDEX reservations_due_for_expiry ON reservations (expires_at)
    WHERE state = 'held' AND pinned_at IS NULL;

-- The reconciler's way to pinned holds; unpinned rows never enter it, so reserve pays nothing for it.
CREATE INDEX reservations_pinned ON reservations (pinned_at) WHERE state = 'held' AND pinned_at IS NOT NULL;
