"""Deduplication: exact, near-duplicate (per medium) and semantic."""
