# The two jobs and their scheduler in one image; docker-compose.yml runs it beside InfluxDB.
#   docker build -t sensor-anomaly .
# The default command runs both jobs on their schedules (deploy/container-schedule.sh). A one-off run,
# with the app service stopped so that it cannot overlap a scheduled one:
#   docker compose run --rm app python sensor_training.py --start=-30d
FROM python:3.11-slim

# Logs reach `docker logs` as they are written, without TensorFlow's C++ INFO lines; no .pyc files in
# the layers or beside the read-only code.
ENV PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies before the code, so that editing a module does not reinstall TensorFlow.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The code stays owned by root: the jobs can write their models and their state and nothing else.
COPY *.py threshold_ratios.json time_step_sizes.json ./
COPY anomaly/ ./anomaly/
COPY deploy/container-schedule.sh ./deploy/
# The generated demo data (docker-compose.yml's seed service: python -m tools.sensor_data).
COPY tools/ ./tools/

# models/ is the jobs' default --models-dir (beside the scripts); state/ is where scoring keeps its
# notification state (STATE_DIRECTORY, read as systemd's StateDirectory= sets it). Each must exist, owned
# by the job user, before VOLUME: a new named volume takes its owner from the image.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin app \
    && mkdir /app/models /app/state \
    && chown app:app /app/models /app/state
ENV STATE_DIRECTORY=/app/state
USER app
VOLUME ["/app/models", "/app/state"]

CMD ["sh", "deploy/container-schedule.sh"]
