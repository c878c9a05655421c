"""The llm_endpoint DAGs' logic, without Airflow: the SageMaker deployment, scaling, smoke test, teardown."""
