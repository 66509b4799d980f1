# One image for the four klantreis services; docker-compose.yml picks the service by its command
# (`python -m services.<name>`). Build: `docker build -t klantreis .` (or `docker compose build`).
# The web tracker (clients/web) that identity serves at /tracker.js, built from its lockfile.
FROM node:20-slim AS tracker
WORKDIR /web
COPY clients/web/package.json clients/web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY clients/web/tsconfig.json ./
COPY clients/web/src/ src/
COPY clients/web/test/ test/
RUN npm run --silent build

# journey's engine compiled by mypyc (services/journey/compiled.py): built where a C compiler and the dev tools are,
# for the same Python as the image below (a build is used only by the Python and the sources it was made from).
FROM python:3.11 AS engine
WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY shared/ shared/
COPY services/ services/
RUN pip install --no-cache-dir -c requirements.lock '.[dev]' \
    && PYTHONPATH=/app python -c "import sys; from services.journey import compiled; sys.exit(not compiled.build())"

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# The installable project only: no tests, no local runtime state (.venv, .kafka, .klantreis).
# README.md is the project's `readme` in pyproject.toml; requirements.lock pins the versions every checkout gets.
COPY pyproject.toml README.md requirements.lock ./
COPY shared/ shared/
COPY services/ services/
COPY deploy/ deploy/
COPY --from=tracker /web/dist/tracker.js clients/web/dist/tracker.js
COPY --from=engine /app/build/journey-compiled/ build/journey-compiled/

# The wheel holds the Python modules only; the services run from /app (PYTHONPATH), where data files that sit
# beside the code, such as services/journey/rules.yaml, are found.
RUN pip install --no-cache-dir -c requirements.lock . \
    && rm -rf build/lib build/bdist* klantreis.egg-info \
    && groupadd --system --gid 10001 klantreis \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent klantreis

USER 10001:10001

# Health checks are per service (each has its own port), so they live in docker-compose.yml.
CMD ["python", "-m", "services.identity"]
