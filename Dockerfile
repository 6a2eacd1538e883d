# The cronbus image: one command, `cronbus`; the service to run is the container's command
# (`docker run cronbus scheduler --consul consul:8500 ...`, see compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The lock decides every version (requirements/runtime.txt, hashed: the service and the clients of the nats, rabbitmq
# and grpc executors, the `executors` extra); the build backend comes from it too.
COPY requirements/runtime.txt ./requirements/
RUN pip install --require-hashes --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY common ./common
COPY services ./services
RUN pip install --no-deps --no-build-isolation . && pip check && rm -rf /src/*

# A fixed uid, so volumes keep their owner across image rebuilds. The executor's data dir and the files
# processor's folder exist here, owned by that user, so named volumes mounted on them start writable.
RUN groupadd --system --gid 10001 cronbus \
    && useradd --system --uid 10001 --gid cronbus --home-dir /var/lib/cronbus --create-home --shell /usr/sbin/nologin cronbus \
    && install -d -o cronbus -g cronbus -m 0750 /var/lib/cronbus/data /var/log/cronbus

USER cronbus
WORKDIR /var/lib/cronbus
# Bus ports of a scheduler (compose.yaml fixes them), the gateway's HTTP port, metrics.
EXPOSE 5555 5556 8080 9100

ENTRYPOINT ["cronbus"]
CMD ["--help"]
