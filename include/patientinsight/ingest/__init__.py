"""From a source file to a staged index version: reading, normalizing, validating, profiling, planning,
embedding in shards, and the ingest run that the DAG and the command line share."""
