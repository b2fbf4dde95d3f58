#!/usr/bin/env bash
# jaxcrop launcher: set-up and runs, locally or on a Cloud TPU VM.
#
#   ./launch.sh demo [OUT]          set up .venv, run the whole pipeline on the built-in demo region
#   ./launch.sh demo --years 2022,2023 [OUT]
#                                   the demo in two years: train on 2022, evaluate on the unseen 2023
#                                   (unseen-year table, previous-year baseline)
#   ./launch.sh test [PYTEST ARGS]  set up .venv, run the test suite (2 workers; -n 0: one process)
#   ./launch.sh train ARGS...       set up .venv, python -m jaxcrop.train ARGS...
#   ./launch.sh tpu ACTION [--dry-run] [-- TRAIN/PREDICT ARGS...]
#                                   Cloud TPU VM: create | setup | train | predict | logs | ssh | delete
#                                   (`tpu predict -- --zone gs-or-local ZONES --out MAPS ...` maps the
#                                   zones on every worker, each its share, resumable: --resume)
#
# Local set-up creates .venv (with $PYTHON, default python3, 3.11 recommended) when absent and
# installs requirements.txt; it re-installs only when requirements.txt changes.
#
# TPU variables (all required for `tpu`, checked before anything runs):
#   JAXCROP_GCP_PROJECT   Google Cloud project id
#   JAXCROP_TPU_ZONE      e.g. us-central2-b (must offer the accelerator type)
#   JAXCROP_TPU_NAME      TPU VM name, e.g. jaxcrop-v4
#   JAXCROP_TPU_TYPE      accelerator type, e.g. v4-8, v5litepod-8, v4-32 (multi-host)
#   JAXCROP_BUCKET        gs:// bucket holding the TFDS data_dir (gs://BUCKET/tfds) and workdirs
# optional:
#   JAXCROP_TPU_RUNTIME   TPU VM image (default tpu-ubuntu2204-base)
#   JAXCROP_TPU_PYTHON    Python of the workers' .venv (default 3.11; uv downloads it, the image's
#                         python3 is only used to install uv)
#   JAXCROP_TPU_SPOT=1    create a Spot (preemptible) VM; after a preemption, rerun
#                         `tpu create`, `tpu setup`, `tpu train`: training resumes from its checkpoints
#   JAXCROP_REPO_URL      git URL to clone on the workers (default: scp a tarball of this checkout's
#                         files that git tracks or would track, uncommitted edits included; not .venv,
#                         outputs or caches)
#   JAXCROP_RUN           run name (default: $JAXCROP_TPU_NAME); workdir = $JAXCROP_BUCKET/runs/$JAXCROP_RUN;
#                         `tpu train` with the same name resumes it, a new experiment needs a new name
#
# `tpu create` describes the VM first: a READY one is reused, a STOPPED one started, a PREEMPTED
# one deleted and recreated, a missing one created.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
VENV="$HERE/.venv"
# TensorFlow (tf.data only) quiet, its oneDNN banner included.
export TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 PYTHONUNBUFFERED=1

die() { echo "launch.sh: error: $*" >&2; exit 2; }
say() { echo "[launch.sh] $*" >&2; }

usage() { sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; }

setup_venv() {
  local py="${PYTHON:-python3}"
  if [ ! -x "$VENV/bin/python" ]; then
    command -v "$py" >/dev/null || die "$py not found; install Python 3.11 or set PYTHON=/path/to/python3.11"
    say "creating $VENV with $($py --version 2>&1)"
    "$py" -m venv "$VENV" || die "could not create $VENV (Debian/Ubuntu: apt-get install python3-venv)"
  fi
  local stamp="$VENV/.requirements.sha256" want
  want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing requirements.txt and the project (pip install -e .) into $VENV (first time: about a minute)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r requirements.txt
    # A path entry to this checkout (pyproject.toml's package-dir), so a checkout's own code
    # (worktrees, CI clones) comes first; it prints no warning (tests/test_launch.py).
    "$VENV/bin/python" -m pip install -q --no-deps -e .
    echo "$want" > "$stamp"
  fi
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
}

# The demos' shared start: OUT made absolute, the venv, and the stage clock (`stage MSG`
# says MSG with the seconds the stage before it took; bash's dynamic scope gives it the
# caller's `lap`).
demo_folder() { mkdir -p "$1" && (cd "$1" && pwd); }
stage() { say "$1 (previous stage: $((SECONDS - lap)) s)"; lap=$SECONDS; }

# The multi-year demo (issue 21): train on 2022, evaluate on the unseen 2023.
run_demo_years() {
  local out
  out="$(demo_folder "$1")"
  setup_venv
  local t0=$SECONDS lap=$SECONDS
  say "1/4 prep: the demo region in 2022 and 2023 -> $out/zones/<year>"
  python -m prep demo --out "$out" --years 2022,2023
  stage "2/4 build: TFDS shards (demo_years: splits y2022_*, y2023_*) -> $out/tfds"
  tfds build tfds_builder/cropmap --config=demo_years --data_dir="$out/tfds" \
    --manual_dir="$out/zones" --noforce_checksums_validation >/dev/null
  stage "3/4 train on 2022, each example cut off at a random month: configs/hybrid.py:demo,years,inseason -> $out/train"
  python -m jaxcrop.train --config configs/hybrid.py:demo,years,inseason --workdir "$out/train" \
    --config.data.data_dir="$out/tfds" --config.years.zones="$out/zones"
  stage "4/4 evaluate on the unseen 2023 (its season aligned): model, pixel baseline, previous-year RPG, in-season curve"
  python -m jaxcrop.evaluate --workdir "$out/train"
  cat <<EOF

Multi-year demo done in $((SECONDS - t0)) s (synthetic demo region: its numbers say nothing about real-world accuracy).
  zone-years     $out/zones/2022, $out/zones/2023
  TFDS dataset   $out/tfds (cropmap/demo_years)
  checkpoints    $out/train
  metrics        $out/train/eval/metrics.json (unseen_year, previous_year_baseline, in_season, season_shift)
EOF
}

run_demo() {
  case "${1:-}" in
    -h|--help) usage; return;;
    --years)
      shift
      [ "${1:-}" = "2022,2023" ] || die "demo --years takes 2022,2023 (the demo_years dataset), got '${1:-}'"
      shift
      [ $# -le 1 ] || die "demo takes one output folder at most, got $# arguments (./launch.sh demo --years 2022,2023 [OUT])"
      run_demo_years "${1:-$HERE/demo_years_run}"
      return;;
    -*) die "demo takes no option '$1' (./launch.sh demo [--years 2022,2023] [OUT])";;
  esac
  [ $# -le 1 ] || die "demo takes one output folder at most, got $# arguments (./launch.sh demo [OUT])"
  local out
  out="$(demo_folder "${1:-$HERE/demo_run}")"
  setup_venv
  local t0=$SECONDS lap=$SECONDS
  say "1/8 prep: demo region -> $out/zones"
  python -m prep demo --out "$out"
  stage "2/8 build: TFDS shards -> $out/tfds"
  tfds build tfds_builder/cropmap --config=demo --data_dir="$out/tfds" \
    --manual_dir="$out/zones" --noforce_checksums_validation >/dev/null
  stage "3/8 train: configs/hybrid.py:demo -> $out/train"
  python -m jaxcrop.train --config configs/hybrid.py:demo --workdir "$out/train" \
    --config.data.data_dir="$out/tfds"
  stage "4/8 evaluate: test split, model vs pixel baseline"
  python -m jaxcrop.evaluate --workdir "$out/train"
  stage "5/8 predict: maps of the test zones -> $out/maps"
  # The test zones are those the dataset put in its `test` split.
  local test_zones
  test_zones=$(python - "$out" <<'PY'
import glob, json, sys
out = sys.argv[1]
meta = json.load(open(sorted(glob.glob(f"{out}/tfds/cropmap/demo/*/metadata.json"))[-1]))
print(" ".join(f"{out}/zones/{z}" for z in meta["zones_per_split"]["test"]))
PY
)
  # shellcheck disable=SC2086
  python -m jaxcrop.predict --workdir "$out/train" --zone $test_zones --out "$out/maps" \
    --overwrite
  stage "6/8 figures -> $out/figures"
  python -m jaxcrop.plots all --zones "$out/zones" --maps "$out/maps" \
    --metrics "$out/train/eval/metrics.json" --out "$out/figures"
  stage "7/8 mosaic: national COGs (classes, confidence, validity), STAC Collection -> $out/national"
  python -m jaxcrop.mosaic --maps "$out/maps" --out "$out/national" -q
  stage "8/8 export: model release (checkpoint, card, STAC MLM, manifest) -> $out/release"
  rm -rf "$out/release"
  python -m jaxcrop.export --workdir "$out/train" --out "$out/release"
  cat <<EOF

Demo done in $((SECONDS - t0)) s (export: $((SECONDS - lap)) s; synthetic demo region: its numbers say nothing about real-world accuracy).
  raw inputs     $out/raw
  zone folders   $out/zones
  TFDS dataset   $out/tfds
  checkpoints    $out/train
  metrics        $out/train/eval/metrics.md (ECE per tier: metrics.json "calibration")
  maps           $out/maps (classes, confidence, validity COGs; item.json: STAC Item)
  figures        $out/figures
  national       $out/national (collection.json: STAC Collection of the zone Items)
  model release  $out/release (MODEL_CARD.md, mlm.json, MANIFEST.json)
EOF
}

run_tests() {
  setup_venv
  # Two workers (pytest-xdist), whole files each: a file's module fixtures are built once,
  # the session's shared ones once for both (tests/conftest.py).
  python -m pytest -q -n 2 --dist loadfile tests "$@"
}

# ---------------------------------------------------------------- Cloud TPU VM
tpu_check() {
  local missing=()
  for v in JAXCROP_GCP_PROJECT JAXCROP_TPU_ZONE JAXCROP_TPU_NAME JAXCROP_TPU_TYPE JAXCROP_BUCKET; do
    [ -n "${!v:-}" ] || missing+=("$v")
  done
  [ ${#missing[@]} -eq 0 ] || die "set ${missing[*]} (see the header of launch.sh)"
  case "$JAXCROP_BUCKET" in gs://*) ;; *) die "JAXCROP_BUCKET must start with gs:// (got $JAXCROP_BUCKET)";; esac
  if [ "$DRY" != 1 ]; then
    command -v gcloud >/dev/null || die "gcloud not found: install the Google Cloud CLI and run 'gcloud auth login'"
  fi
}

# Runs (or, with --dry-run, prints) one command.
x() { if [ "$DRY" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi; }

tpu_ssh() {  # tpu_ssh COMMAND: runs COMMAND on every worker of the TPU VM
  x gcloud compute tpus tpu-vm ssh "$JAXCROP_TPU_NAME" --project="$JAXCROP_GCP_PROJECT" \
    --zone="$JAXCROP_TPU_ZONE" --worker=all --command="$1"
}

all_of() {  # all_of CMD...: one shell line running each CMD while the previous ones succeed
  local line="$1"; shift
  for c in "$@"; do line+=" && $c"; done
  printf '%s' "$line"
}

tpu_bundle() {  # sets BUNDLE: a tarball of the project files, what git tracks or would track
  git -C "$HERE" rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$HERE is not a git" \
    "checkout: tpu setup ships the files git lists (not .venv or outputs); run it from a clone, or set JAXCROP_REPO_URL"
  BUNDLE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/jaxcrop-setup.XXXXXX")"
  # Kept after a dry run, to look at: tar -tzf PATH.
  [ "$DRY" = 1 ] || trap 'rm -rf "$BUNDLE_DIR"' EXIT
  BUNDLE="$BUNDLE_DIR/jaxcrop.tar.gz"
  local f
  # Tracked and untracked-not-ignored files, uncommitted edits included; a tracked file deleted
  # from the work tree is left out.
  git -C "$HERE" ls-files -z -co --exclude-standard -- . ':!.venv' | while IFS= read -r -d '' f; do
    if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
  done | tar -czf "$BUNDLE" --null --no-recursion -T -
  say "setup ships $(tar -tzf "$BUNDLE" | wc -l | tr -d ' ') files, $(du -k "$BUNDLE" | cut -f1) KiB: $BUNDLE"
}

tpu_state() {  # the VM's state (READY, STOPPED, PREEMPTED, ...), empty when there is none
  local err state
  err="$(mktemp)"
  if state="$(gcloud compute tpus tpu-vm describe "$JAXCROP_TPU_NAME" --project="$JAXCROP_GCP_PROJECT" \
      --zone="$JAXCROP_TPU_ZONE" --format='value(state)' 2>"$err")"; then
    rm -f "$err"; echo "$state"
  elif grep -q NOT_FOUND "$err"; then
    rm -f "$err"
  else
    state="$(tail -n 1 "$err")"; rm -f "$err"
    die "could not describe TPU VM $JAXCROP_TPU_NAME: $state"
  fi
}

tpu_create() {  # tpu_create RUNTIME: reuse, start or (re)create the VM, after its state
  local spot=(); [ "${JAXCROP_TPU_SPOT:-0}" = 1 ] && spot=(--spot)
  local where=(--project="$JAXCROP_GCP_PROJECT" --zone="$JAXCROP_TPU_ZONE")
  local create=(gcloud compute tpus tpu-vm create "$JAXCROP_TPU_NAME" "${where[@]}"
    --accelerator-type="$JAXCROP_TPU_TYPE" --version="$1" "${spot[@]}")
  if [ "$DRY" = 1 ]; then
    x gcloud compute tpus tpu-vm describe "$JAXCROP_TPU_NAME" "${where[@]}" --format='value(state)'
    say "dry run: state unknown; READY is reused, STOPPED started, PREEMPTED deleted and recreated, none created:"
    x "${create[@]}"
    return
  fi
  local state; state="$(tpu_state)"
  case "$state" in
    "") x "${create[@]}";;
    READY) say "$JAXCROP_TPU_NAME is READY: reusing it";;
    STOPPED) say "$JAXCROP_TPU_NAME is STOPPED: starting it"
      x gcloud compute tpus tpu-vm start "$JAXCROP_TPU_NAME" "${where[@]}";;
    PREEMPTED|TERMINATED) say "$JAXCROP_TPU_NAME was $state: recreating it (then run tpu setup again)"
      x gcloud compute tpus tpu-vm delete "$JAXCROP_TPU_NAME" "${where[@]}" --quiet
      x "${create[@]}";;
    *) die "$JAXCROP_TPU_NAME is $state: rerun 'tpu create' once that is over, or 'tpu delete' it";;
  esac
}

run_tpu() {
  local action="${1:-}"; shift || true
  DRY=0
  local rest=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --dry-run) DRY=1;;
      --) shift; rest+=("$@"); break;;
      *) rest+=("$1");;
    esac
    shift
  done
  case "$action" in
    create|setup|train|predict|logs|ssh|delete) ;;
    "") die "tpu needs an action: create | setup | train | predict | logs | ssh | delete";;
    *) die "unknown tpu action '$action' (create | setup | train | predict | logs | ssh | delete)";;
  esac
  tpu_check
  local runtime="${JAXCROP_TPU_RUNTIME:-tpu-ubuntu2204-base}"
  local run="${JAXCROP_RUN:-$JAXCROP_TPU_NAME}"
  [[ "$run" =~ ^[A-Za-z0-9._-]+$ ]] || die "JAXCROP_RUN must be letters, digits, . _ - (got '$run')"
  local jaxver; jaxver="$(sed -n 's/^jax==//p' requirements.txt)"
  [ -n "$jaxver" ] || die "requirements.txt pins no jax==VERSION (the TPU build needs it)"
  local py="${JAXCROP_TPU_PYTHON:-3.11}"
  case "$action" in
    create) tpu_create "$runtime";;
    setup)
      if [ -n "${JAXCROP_REPO_URL:-}" ]; then
        tpu_ssh "rm -rf ~/jaxcrop && git clone --depth 1 $(printf %q "$JAXCROP_REPO_URL") ~/jaxcrop"
      else
        tpu_bundle
        x gcloud compute tpus tpu-vm scp "$BUNDLE" "$JAXCROP_TPU_NAME:jaxcrop.tar.gz" --project="$JAXCROP_GCP_PROJECT" \
          --zone="$JAXCROP_TPU_ZONE" --worker=all
        tpu_ssh "$(all_of "rm -rf ~/jaxcrop" "mkdir ~/jaxcrop" "tar -xzf ~/jaxcrop.tar.gz -C ~/jaxcrop" \
          "rm ~/jaxcrop.tar.gz")"
      fi
      # The image's python3 (3.10 on tpu-ubuntu2204-base) is too old for requirements.txt: it only
      # installs uv, which fetches a standalone CPython $py. One resolve: the CPU requirements and the
      # TPU build of the same jax; jax[tpu] pins its libtpu, which is on PyPI (no -f find-links page).
      tpu_ssh "$(all_of "cd ~/jaxcrop" \
        'export PATH="$HOME/.local/bin:$PATH"' \
        '{ command -v uv >/dev/null || python3 -m pip install -q --user uv || curl -LsSf https://astral.sh/uv/install.sh | sh; }' \
        "rm -rf .venv" "uv venv -q --python $(printf %q "$py") .venv" \
        "uv pip install -q --python .venv/bin/python -r requirements.txt \"jax[tpu]==$jaxver\"")"
      ;;
    train)
      # --config must come before any --config.x.y override (ml_collections refuses otherwise).
      local args=("${rest[@]}") has_config=0 a
      for a in "${args[@]}"; do case "$a" in --config|--config=*) has_config=1;; esac; done
      [ "$has_config" = 1 ] || args=(--config configs/hybrid.py "${args[@]}")
      # Each word quoted for the remote shell: an override such as widths='(32,64)' stays one word.
      local workdir="$JAXCROP_BUCKET/runs/$run" q
      q="$(printf '%q ' "${args[@]}" --multihost --config.data.data_dir="$JAXCROP_BUCKET/tfds" \
        --workdir "$workdir")"
      tpu_ssh "cd ~/jaxcrop && TF_CPP_MIN_LOG_LEVEL=2 nohup .venv/bin/python -m jaxcrop.train $q> ~/train-$run.log 2>&1 < /dev/null &"
      say "workdir $workdir (a rerun with this JAXCROP_RUN resumes from its checkpoints)"
      [ "$DRY" = 1 ] || say "training started; follow with: ./launch.sh tpu logs"
      ;;
    predict)
      # Every worker runs the same command; each JAX process maps its share of the zones
      # (jax.process_index/process_count), --resume skips the zones already complete.
      local workdir="$JAXCROP_BUCKET/runs/$run" q
      q="$(printf '%q ' --workdir "$workdir" --resume "${rest[@]}")"
      tpu_ssh "cd ~/jaxcrop && TF_CPP_MIN_LOG_LEVEL=2 nohup .venv/bin/python -m jaxcrop.predict $q> ~/predict-$run.log 2>&1 < /dev/null &"
      [ "$DRY" = 1 ] || say "prediction started on every worker; follow with: ./launch.sh tpu logs"
      ;;
    logs) tpu_ssh "tail -n 50 -f \$(ls -t ~/train-*.log ~/predict-*.log 2>/dev/null | head -1)";;
    ssh) x gcloud compute tpus tpu-vm ssh "$JAXCROP_TPU_NAME" --project="$JAXCROP_GCP_PROJECT" --zone="$JAXCROP_TPU_ZONE";;
    delete) x gcloud compute tpus tpu-vm delete "$JAXCROP_TPU_NAME" --project="$JAXCROP_GCP_PROJECT" --zone="$JAXCROP_TPU_ZONE" --quiet;;
  esac
}

cmd="${1:-}"; shift || true
case "$cmd" in
  demo) run_demo "$@";;
  test) run_tests "$@";;
  train) setup_venv; python -m jaxcrop.train "$@";;
  tpu) run_tpu "$@";;
  -h|--help|help|"") usage;;
  *) die "unknown command '$cmd' (demo | test | train | tpu; ./launch.sh --help)";;
esac
