"""The data directory: where every file lives, durable writes, the disk reserve."""
