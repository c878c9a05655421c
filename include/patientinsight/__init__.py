"""PatientInsight: retrieval of similar published patient cases, orchestrated by Airflow."""

__version__ = "0.1.0"
