"""The only code in learnloop that speaks SQL: one DuckDB file per data root."""
