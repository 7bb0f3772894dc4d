"""The SQLite index: schema and migrations, the single writer, read-only queries, start-up reconcile, retention classes."""
