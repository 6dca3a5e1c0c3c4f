"""Recordings -> segments -> features -> Parquet shards, and back to torch."""
