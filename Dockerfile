# clockin-bridge in a container: non-root, database on a volume, config mounted read-only.
#   docker build -t clockin-bridge .
#   docker run -v clockin-data:/var/lib/clockin-bridge \
#              -v $PWD/config.yaml:/etc/clockin-bridge/config.yaml:ro clockin-bridge
FROM python:3.11-slim

# The config file in /etc/clockin-bridge makes /var/lib/clockin-bridge the state folder (the
# database's default place) and relative paths in it resolve there; secrets named in it
# (`api_key_file: go2clock_api_key`) are looked up where Docker puts them, under systemd's name
# for that folder (bridge/config/paths.py). `docker exec` commands see the same.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CLOCKIN_CONFIG=/etc/clockin-bridge/config.yaml \
    CREDENTIALS_DIRECTORY=/run/secrets

# Any working directory works (paths follow the config file); the commands run from /.
WORKDIR /opt/clockin-bridge
COPY pyproject.toml constraints.txt README.md ./
COPY bridge ./bridge
RUN pip install -c constraints.txt . \
 && useradd --system --home-dir /var/lib/clockin-bridge --shell /usr/sbin/nologin clockin \
 && mkdir -p /var/lib/clockin-bridge /etc/clockin-bridge \
 && chown clockin:clockin /var/lib/clockin-bridge

USER clockin
VOLUME ["/var/lib/clockin-bridge"]

# /healthz answers while the event loop is responsive (http.listen, default 127.0.0.1:9108).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]

ENTRYPOINT ["clockin-bridge"]
CMD ["run"]
