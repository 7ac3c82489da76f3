# The production image: `turnout serve` on 0.0.0.0:8000 as a non-root user, the policy file and the
# knowledge index read from mounted paths. Build: `docker build -t turnout .` (README, "Deploy").
# The base is any Debian-like image with Python 3.11 as `python3` and its venv module: without a registry,
# `make image` builds on Debian bookworm made by debootstrap (--build-arg PYTHON_IMAGE=...; tests/deploy/image.py).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Stage 1: install Turnout and its dependencies (the ranges pinned in pyproject.toml) into a virtualenv.
# Every dependency ships a manylinux wheel for CPython 3.11, so no compiler is needed even here.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/turnout
COPY pyproject.toml README.md ./
COPY proxy/ proxy/
COPY routes/ routes/
COPY policies/ policies/
# Turnout's own wheel is pure Python (setuptools in an isolated build env); its dependencies come as
# binary wheels only, and pip itself (and the setuptools venv puts beside it, which nothing imports at run time)
# is removed from the virtualenv once it has done its job.
RUN /opt/turnout/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/turnout/bin/pip install --no-cache-dir --only-binary=:all: /wheels/turnout-*.whl \
    && /opt/turnout/bin/pip uninstall --yes pip setuptools

# Stage 2: the runtime: the slim base, the virtualenv, a non-root user; no compiler, no pip, no caches.
# The virtualenv's python links to the base's python3, so both stages use the same base.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="turnout" \
      org.opencontainers.image.description="An OpenAI-compatible routing proxy: a cheap fine-tuned model, a frontier model or RAG per request, by policy."
RUN groupadd --system --gid 10001 turnout \
    && useradd --system --uid 10001 --gid turnout --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin turnout \
    && mkdir -p /etc/turnout /var/lib/turnout/knowledge
COPY --from=build /opt/turnout /opt/turnout
# TURNOUT_CONFIG is left unset: with no policy file and no OPENAI_API_KEY the image answers from the
# built-in simulated upstream. Mount a policy file (e.g. at /etc/turnout/policy.yaml) and set
# TURNOUT_CONFIG to it; a RAG route's `index:` names the mounted index (/var/lib/turnout/knowledge), or an
# image FROM this one bakes the index in with `turnout index add` (README, "Deploy").
ENV PATH=/opt/turnout/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TURNOUT_HOST=0.0.0.0 \
    TURNOUT_PORT=8000
WORKDIR /var/lib/turnout
USER 10001:10001
EXPOSE 8000
# No curl in the slim image: Python asks /healthz on the port Turnout listens on.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TURNOUT_PORT', '8000') + '/healthz', timeout=2)"]
ENTRYPOINT ["turnout"]
CMD ["serve"]
