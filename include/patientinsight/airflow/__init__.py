"""The only code that imports Airflow: DAG defaults, the SageMaker operators, the readiness sensor, what the
connections give (S3 options, Pinecone credentials), and loading airflow_settings.yaml locally."""
