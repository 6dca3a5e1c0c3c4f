#!/usr/bin/env bash
# `make demo`: the main job end to end on the built-in demo study.
#   1. mercl synth     a real-format demo study (mp4 clips + EDF EEG + ratings + manifest)
#   2. mercl prepare   4 s segments -> Parquet shards (skips work already done)
#   3. a local Ray head, started only if no cluster is running
#   4. ray job submit  tuning/search.py: Tune + Optuna + ASHA, each trial one worker in a warm
#      Tune actor, 2 at a time (tuning/configs/demo.yaml)
#   5. prints the headline (held-out clips, beside majority and clip-majority), the final
#      model, where the results are and the TensorBoard command
#
# Token auth: a local ray.init() leaves ~/.ray/auth_token behind, after which a new head
# enforces tokens and a client without RAY_AUTH_MODE=token gets "Missing authentication
# token". We set RAY_AUTH_MODE=token for the head and the client alike (the head creates
# the token if there is none), so both sides always agree.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=${DEMO_DIR:-out/demo}
CONFIG=${DEMO_CONFIG:-tuning/configs/demo.yaml}
export PATH="$ROOT/.venv/bin:$PATH"
export RAY_AUTH_MODE=token
export RAY_USAGE_STATS_ENABLED=0

step() { printf '\n== %s\n' "$*"; }

step "1/4 synthesising the demo study in $DEMO/raw"
if [ -f "$DEMO/raw/manifest.csv" ]; then
    echo "already there ($DEMO/raw/manifest.csv)"
else
    mercl synth "$DEMO/raw"
fi

step "2/4 preparing segments and features -> $DEMO/shards"
mercl prepare "$DEMO/raw" --source manifest -o "$DEMO/shards" --video-size 64 --video-fps 1

step "3/4 Ray cluster"
DASHBOARD=${RAY_DASHBOARD:-127.0.0.1:8265}
RAY_TMP=${DEMO_RAY_TMP:-/tmp/mercl-demo-ray}  # a private temp dir: cleanup stops only this head
started_head=0
if ray job list --address "http://$DASHBOARD" >/dev/null 2>&1; then
    echo "using the running Ray cluster at http://$DASHBOARD"
else
    # A head of our own on free ports with a private temp dir, so that it neither collides
    # with nor gets mixed up with any other Ray instance on this machine, and can be
    # stopped alone afterwards (plain `ray stop` would end every Ray process here).
    # free ports for the GCS, the dashboard and the dashboard agent's HTTP server (the job agent:
    # at its default 52365, taken by any other Ray head here, jobs cannot be submitted)
    read -r gcs_port dash_port agent_port < <(python - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
    DASHBOARD=127.0.0.1:$dash_port
    ray start --head --port="$gcs_port" --dashboard-port="$dash_port" --dashboard-host=127.0.0.1 \
        --dashboard-agent-listen-port="$agent_port" \
        --include-dashboard=true --num-cpus="$(nproc)" --temp-dir="$RAY_TMP" --disable-usage-stats >/dev/null
    started_head=1
    echo "started a local Ray head (dashboard http://$DASHBOARD)"
fi
cleanup() {
    if [ "$started_head" = 1 ]; then
        echo "stopping the Ray head this demo started"
        pkill -TERM -f -- "$RAY_TMP" 2>/dev/null || true
        sleep 2
        pkill -KILL -f -- "$RAY_TMP" 2>/dev/null || true
    fi
}
trap cleanup EXIT

step "4/4 ray job submit tuning/search.py (the search prints a live trial table)"
# A fresh head's job agent comes up a few seconds after its dashboard (under load, tens of
# seconds): until then `ray job submit` fails with "No available agent to submit job" and a
# traceback. Wait for it quietly with a no-op job, then submit the search.
for attempt in $(seq 1 60); do
    if ray job submit --address "http://$DASHBOARD" --no-wait -- true >/dev/null 2>&1; then
        break
    fi
    if [ "$attempt" = 1 ]; then echo "waiting for the Ray job agent"; fi
    sleep 2
done
ray job submit --address "http://$DASHBOARD" --working-dir . -- \
    python tuning/search.py --config "$CONFIG" \
    --dataset "$ROOT/$DEMO/shards" --storage "$ROOT/$DEMO/search"

name=$(python -c "import yaml,sys; print(yaml.safe_load(open('$CONFIG'))['name'])")
RESULTS=$DEMO/search/$name
echo
# the clean headline: accuracy on data no part of the search saw, beside both baselines
if [ -f "$RESULTS/summary.md" ]; then
    echo "headline:     $(sed -n '/^## Headline/{n;n;p;q}' "$RESULTS/summary.md" | tr -d '*')"
fi
echo "results:      $RESULTS/ (summary.md, trials.csv, best_config.yaml, crossval/, plots/)"
if [ -f "$RESULTS/model.pt" ]; then
    echo "final model:  $RESULTS/model.pt   (mercl info $RESULTS/model.pt)"
    if mercl predict --help >/dev/null 2>&1; then
        echo "predict:      mercl predict $RESULTS/model.pt $DEMO/raw --source manifest -o $DEMO/predictions"
    fi
fi
echo "tensorboard:  .venv/bin/tensorboard --logdir $RESULTS"
