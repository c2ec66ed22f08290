"""Stage 1, ingest: the production DB contract (tables, windowed extraction) and the sample-data seeder."""
