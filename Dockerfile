# Relay's image: one image for the API (`relay api`), the worker (`relay worker`) and
# migrations (`relay migrate`). See docker-compose.yml for how they are wired.

# --- build: a wheel of Relay itself ------------------------------------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY relay ./relay
COPY api ./api
COPY workflows ./workflows
COPY activities ./activities
COPY worker.py ./
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RELAY_ENV=production \
    DATA_DIR=/var/lib/relay \
    API_HOST=0.0.0.0 \
    API_PORT=8000

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/relay --create-home relay

# Never root: the API, worker and migrations all run as this unprivileged user.
USER relay
WORKDIR /var/lib/relay

EXPOSE 8000 9464
# Health checks live in docker-compose.yml: the API and the worker answer on different ports.
CMD ["relay", "api"]
