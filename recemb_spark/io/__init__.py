"""Input and the warehouse: readers, the built-in sample, dated Parquet tables."""
