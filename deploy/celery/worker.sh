#!/usr/bin/env bash
# Start one deer-reid Celery worker in the foreground (Ctrl-C or SIGTERM stops it).
#   deploy/celery/worker.sh gpu [NAME] [CONCURRENCY]      # on the GPU machine: GPU steps, one at a time
#   deploy/celery/worker.sh dagster [NAME] [CONCURRENCY]  # anywhere: every other step (the default queue)
# The environment is the one described in deploy/celery/env.example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
queue="${1:?usage: worker.sh gpu|dagster [NAME] [CONCURRENCY]}"
name="${2:-$queue}"
concurrency="${3:-1}"
for var in DAGSTER_HOME DAGSTER_PG_URL DEER_REID_CELERY_BROKER DEER_REID_CELERY_BACKEND; do
    if [ -z "${!var:-}" ]; then echo "worker.sh: $var is not set (see deploy/celery/env.example)" >&2; exit 2; fi
done
if [ ! -f "$DAGSTER_HOME/dagster.yaml" ]; then  # the project's instance file (workers started at once: atomic)
    mkdir -p "$DAGSTER_HOME"
    tmp="$(mktemp "$DAGSTER_HOME/.dagster.yaml.XXXXXX")"
    cp "$here/../dagster.yaml" "$tmp" && mv -f "$tmp" "$DAGSTER_HOME/dagster.yaml"
fi
# dagster-celery writes the broker settings into a module under $DAGSTER_HOME and runs `celery worker`;
# -i loads the code location once, before the pool forks, instead of in the first task of each process.
exec dagster-celery worker start -A dagster_celery.app -y "$here/celery.yaml" -q "$queue" -n "$name" \
    -i deer_reid_assets.celery_definitions \
    -- --concurrency="$concurrency"
