"""The only code that imports Airflow: DAG defaults, the SageMaker operators, the readiness sensor, S3 storage
options from a connection, and loading airflow_settings.yaml into a local Airflow."""
