# syntax=docker/dockerfile:1
# Build targets:
#   airflow  - the Airflow image: official apache/airflow 3.3.2 (Python 3.11) + pinned requirements + the project
# (The `serving` target arrives with the serving service.)

FROM apache/airflow:3.3.2-python3.11 AS airflow
# torch first from the CPU index: a plain resolve would pull a multi-GB CUDA build.
COPY --chown=airflow:root constraints.txt requirements.txt /opt/patientinsight/
RUN pip install --no-cache-dir -c /opt/patientinsight/constraints.txt torch==2.13.0 \
      --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -c /opt/patientinsight/constraints.txt -r /opt/patientinsight/requirements.txt
COPY --chown=airflow:root pyproject.toml README.md /opt/patientinsight/
COPY --chown=airflow:root include/ /opt/patientinsight/include/
RUN pip install --no-cache-dir --no-deps /opt/patientinsight
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
ENV HF_HUB_OFFLINE=1 \
    PATIENTINSIGHT_HOME=/opt/airflow/patientinsight
