"""What a patient record is, below every package that handles one: its columns (columns), ages in years
and as clinicians say them (ages), and the synthetic demo case reports (synthetic). Imports nothing of
the project, so the service, the embedders and the index can use it without loading the ingest side."""
