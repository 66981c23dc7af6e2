#!/bin/sh
# Both jobs in one container, without a cron daemon (the image's default command).
#
# Prediction runs at start and then on every multiple of PREDICT_EVERY_S seconds of the clock (the
# ticks of sensor-predict.timer and the crontab). Training runs at the first tick of each UTC month,
# and at start when the models directory holds no model yet. Each job is awaited before the next one
# starts, so runs never overlap; a long training run delays prediction, which then catches up by
# itself (sensor_predict.py resumes after its newest score).
#
# The month of the last training run is kept in <models dir>/.last-training-month, beside the models
# and on the same volume, so a restarted container neither retrains nor misses a month. Delete that
# file to retrain at the next tick.
#
# Environment:
#   TRAINING_ARGS, PREDICT_ARGS  extra flags for each job, split on blanks without quoting, so use the
#                                --flag=value form (--start=-90d)
#   MODELS_DIR                   default: models/ beside the scripts (the jobs' own default)
#   PREDICT_EVERY_S              default 300
#   PYTHON                       default python3
#
# Everything goes to stdout, the jobs' logs included, one line each.
set -u
set -f  # the *_ARGS are split on blanks; * or ? in them must reach the job unexpanded

app_dir=$(cd "$(dirname "$0")/.." && pwd) || exit 1
models_dir=${MODELS_DIR:-$app_dir/models}
every_s=${PREDICT_EVERY_S:-300}
python=${PYTHON:-python3}
training_args=${TRAINING_ARGS:-}
predict_args=${PREDICT_ARGS:-}
stamp=$models_dir/.last-training-month
child=

log() {
    printf '%sZ INFO container-schedule: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S')" "$*"
}

stop() {
    log "stopping"
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null
        wait "$child" 2>/dev/null  # dash would print "Terminated" for the job it just ended
    fi
    exit 143
}
# A shell runs a trap only between commands, so everything long runs in the background and is
# awaited with wait, which a signal interrupts: docker stop then takes effect at once.
trap stop TERM INT

# run NAME COMMAND...: run to the end and log its exit status; returns that status.
run() {
    name=$1
    shift
    log "$name: starting"
    "$@" 2>&1 &
    child=$!
    wait "$child"
    status=$?
    child=
    log "$name: finished with exit status $status"
    return "$status"
}

has_models() {
    set +f
    set -- "$models_dir"/*/metadata.json
    set -f
    [ -e "$1" ]
}

train() {
    # The month is recorded whatever the outcome: a failed run is retried next month or by hand,
    # never every few minutes (a partial failure still exits 1, and training is expensive).
    # shellcheck disable=SC2086  # splitting the extra flags is intended
    run training "$python" sensor_training.py --models-dir="$models_dir" $training_args
    date -u +%Y-%m >"$stamp"
}

predict() {
    # shellcheck disable=SC2086
    run prediction "$python" sensor_predict.py --models-dir="$models_dir" $predict_args
}

cd "$app_dir" || exit 1
mkdir -p "$models_dir" || exit 1
log "models in $models_dir; prediction every ${every_s}s, training monthly"

if ! has_models; then
    log "no model in $models_dir yet: training first"
    train
elif [ ! -e "$stamp" ]; then
    # Models made before this scheduler kept a stamp count as this month's.
    date -u +%Y-%m >"$stamp"
fi

while :; do
    if [ "$(cat "$stamp" 2>/dev/null)" != "$(date -u +%Y-%m)" ]; then
        train
    fi
    predict
    now=$(date +%s)
    sleep $((every_s - now % every_s)) &
    child=$!
    wait "$child"
    child=
done
