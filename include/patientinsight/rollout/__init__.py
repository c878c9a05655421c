"""The serving_rollout DAG's logic, without Airflow: request, helm command, readiness and MLflow run."""
