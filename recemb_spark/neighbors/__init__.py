"""Exact and LSH top-K: item neighbours, user candidates, one-item queries."""
