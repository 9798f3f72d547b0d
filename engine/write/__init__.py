"""Writing: transform output checked against the declaration, then committed as Parquet."""
