"""The clinicians' query service (FastAPI), on the shared retrieval code of `patientinsight`."""
