# Traceo FinOps on the official Apache Airflow image: the pinned requirements, the library, the DAGs, the
# plugins and the default configuration, baked in. Nothing of the devstack, the tests or the benchmarks
# (.dockerignore keeps them out of the build context).
#
#   docker build --pull -t traceo-finops-airflow:3.3.2 .      (or `docker compose build`, see docker-compose.yaml)
#
# It extends the official image the way the image's docs describe ("Extending the image"): apt as root and back
# to the airflow user, pip as the airflow user with apache-airflow pinned to the image's own ${AIRFLOW_VERSION}
# so that pip fails loudly instead of up- or downgrading Airflow. Deploying it: docs/deploy.md.
#
# Python 3.11, as requires-python in pyproject.toml (the image's default Python is newer).
FROM apache/airflow:3.3.2-python3.11

# promtool and prometheus (the recording-rules proof, the SLO rule checks) and amtool (the SLO routing check)
# from Debian's packages: the paths the configuration expects (/usr/bin/promtool, /usr/bin/prometheus,
# /usr/bin/amtool) and the same packages the local stack installs (devstack/ensure-prometheus.sh).
USER root
RUN apt-get update \
  && apt-get install -y --no-install-recommends prometheus prometheus-alertmanager \
  && apt-get autoremove -yqq --purge \
  && apt-get clean \
  && rm -rf /var/lib/apt/lists/*
USER airflow

# Python packages: exactly the pins of requirements.txt, their dependencies held to requirements-lock.txt — the
# tree the test suite ran on — used as the constraints file. (The image's own ${HOME}/constraints.txt was frozen
# when Airflow was released; it need not agree with these pins, and pip cannot satisfy two different pins.)
# `pip check` fails the build if a package the image already had (a provider we do not pin) no longer fits.
COPY --chown=airflow:0 requirements.txt requirements-lock.txt /opt/traceo/
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
      -r /opt/traceo/requirements.txt -c /opt/traceo/requirements-lock.txt \
  && pip check

# The library (include/traceo_finops), its price tables (include/pricing) and the default configuration
# (include/config/finops.yaml) stay together under /opt/airflow/include: the library finds the price tables and
# the default configuration relative to its own folder, and relative paths of the configuration (report_root)
# resolve against /opt/airflow. DAG files import it as `traceo_finops`, through PYTHONPATH.
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
ENV PYTHONPATH=/opt/airflow/include:/opt/airflow \
    FINOPS_CONFIG=/opt/airflow/include/config/finops.yaml

# The default report root (report_root: reports) must be writable by the arbitrary user the image may run as
# (group 0, see the image's docs on writable directories). Production points report_root at s3:// instead.
RUN umask 0002; mkdir -p /opt/airflow/reports
