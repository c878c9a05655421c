"""The columns of a normalized patient record: what ingest/records.py writes and every index version
stores beside its vectors (index/types.py), defined once here."""

from __future__ import annotations

RECORD_COLUMNS = (
    "uid", "pmid", "title", "text", "age_years", "sex", "pub_date",
    "similar_patients", "relevant_articles", "content_hash",
)  # fmt: skip

# The longest patient_uid a record may have, the same bound in validation, the index and the query API
# (so every indexed case can be opened and asked about).
MAX_UID_CHARS = 128
