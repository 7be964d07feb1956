# Oba container image. Build: docker build -t oba .   Run: docker compose up -d
# Two stages: the builder compiles wheels (build tools live only there); the runtime stage gets
# a virtualenv with Oba's runtime dependencies only (no test extras such as python-ldap).

FROM python:3.11-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/oba
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/oba/bin/pip install . \
    && /opt/oba/bin/oba version

FROM python:3.11-slim
LABEL org.opencontainers.image.title="Oba" \
      org.opencontainers.image.description="LDAP v3 directory server with a built-in Raft cluster mode"
ENV PATH=/opt/oba/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system oba \
    && useradd --system --gid oba --home-dir /var/lib/oba --no-create-home \
       --shell /usr/sbin/nologin oba \
    && mkdir -p /etc/oba /var/lib/oba \
    && chown oba:oba /var/lib/oba
COPY --from=builder /opt/oba /opt/oba
COPY deploy/docker/config.yaml /etc/oba/config.yaml

USER oba
WORKDIR /var/lib/oba
VOLUME ["/var/lib/oba"]
# LDAP, LDAPS, REST API, web admin, Raft
EXPOSE 1389 636 8080 3000 4445
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/v1/health', timeout=2)"]
ENTRYPOINT ["oba"]
CMD ["serve", "--config", "/etc/oba/config.yaml"]
