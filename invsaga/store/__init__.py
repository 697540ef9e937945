"""The store owns all SQL: table definitions, migrations, shard routing and one function per operation."""
