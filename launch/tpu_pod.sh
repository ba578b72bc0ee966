#!/bin/bash
# Train spidr_jax on a Cloud TPU VM slice (a pod slice of several hosts, or a single host): one process per host,
# started on every host at once with `gcloud compute tpus tpu-vm ssh --worker=all`.
#
#   launch/tpu_pod.sh --name my-v4-32 --zone us-central2-b configs/base.py \
#       --config.run.workdir=/mnt/shared/runs/spidr_base --config.data.manifest=/mnt/shared/data/train.csv
#
# Steps: (1) install spidr_jax and JAX's TPU build on every host (from this checkout or a git URL), (2) run the
# trainer on every host. Each process drives the TPU chips of its host; together they form one mesh over all
# chips. The workdir, the manifest and the audio must be at the same path on every host, on storage they share
# (an NFS/Filestore mount, or a bucket mounted with gcsfuse): every process writes its part of each checkpoint.
# Restarting the same command resumes from the newest checkpoint in the workdir.
#
# Run with -h for the options. Nothing here is specific to one project or zone: every value comes from the
# options or the environment variables named in the usage.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "${SCRIPT_DIR}")"
# On each host ($HOME expanded there).
# shellcheck disable=SC2016
LOG_FILE='$HOME/spidr_jax_train.log'
# shellcheck disable=SC2016
PID_FILE='$HOME/spidr_jax_train.pid'

usage() {  # usage [EXIT CODE]: asked for with -h, on stdout (0); otherwise on stderr (2)
  local code=${1:-2}
  if ((code == 0)); then exec 3>&1; else exec 3>&2; fi
  cat >&3 <<'EOF'
usage: launch/tpu_pod.sh [OPTIONS] CONFIG [--config.SECTION.FIELD=VALUE ...]
       launch/tpu_pod.sh [OPTIONS] --stop

Install spidr_jax on every host of a Cloud TPU VM slice and train on all of them.

  CONFIG                a config file of the installed checkout, e.g. configs/base.py
  --config.X.Y=VALUE    overrides, at least run.workdir and data.manifest (paths every host shares)

options (environment variable in brackets):
  --name NAME           TPU VM name [TPU_NAME]
  --zone ZONE           its zone [TPU_ZONE]
  --project PROJECT     Google Cloud project [TPU_PROJECT] (default: gcloud's configured project)
  --source SOURCE       where the hosts install spidr_jax from [SPIDR_JAX_SOURCE]: a git URL (cloned on each
                        host) or a local git checkout (its committed HEAD is copied to each host);
                        default: the checkout this script is in
  --ref REF             branch, tag or commit to install from a git URL [SPIDR_JAX_REF] (default: its default
                        branch)
  --remote-dir DIR      install directory on the hosts, relative to the home directory (default: spidr_jax)
  --python PYTHON       Python interpreter on the hosts, >= 3.11 (default: python3)
  --env NAME=VALUE      an environment variable for the trainers (repeatable), e.g.
                        --env SPIDR_JAX_COMPILATION_CACHE=/mnt/shared/jax_cache
  --port PORT           port of the JAX coordinator on host 0 (default: 8482)
  --gcloud-arg ARG      extra argument for every `gcloud ... ssh/scp` (repeatable), e.g. --gcloud-arg=--internal-ip
  --no-install          skip the install (use what an earlier launch installed)
  --install-only        install, do not train
  --background          start the trainers detached and return; each host logs to ~/spidr_jax_train.log
  --stop                send SIGTERM to trainers started with --background (they save a checkpoint and exit)
  --dry-run             print the commands instead of running them
  -h, --help            this message
EOF
  exit "$code"
}

die() {
  echo "error: $*" >&2
  echo "(run with --help for the usage)" >&2
  exit 2
}

# ---- on a host: the trainer, as one process of the job ------------------------------------------------------
# `launch/tpu_pod.sh --on-host PYTHON PORT BACKGROUND [NAME=VALUE ...] -- CONFIG ARGS...` is what step (2) runs on
# every host, from the installed checkout.
on_host() {
  local python="$1" port="$2" background="$3"
  shift 3
  while [[ $# -gt 0 && "$1" != -- ]]; do
    export "${1?}"
    shift
  done
  shift  # --
  # The process id of this host and the list of hosts come from the TPU VM's metadata server (the source JAX's
  # own Cloud TPU detection reads). Giving them to the trainer as JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  # JAX_PROCESS_ID makes it call jax.distributed.initialize on every host of the slice
  # (spidr_jax/runtime.py), which multi-host checkpointing needs.
  local metadata="http://metadata.google.internal/computeMetadata/v1/instance/attributes"
  local worker_id endpoints
  worker_id="$(curl -sf -H 'Metadata-Flavor: Google' "${metadata}/agent-worker-number")" ||
    { echo "error: no TPU VM metadata (agent-worker-number) on $(hostname)" >&2; exit 1; }
  endpoints="$(curl -sf -H 'Metadata-Flavor: Google' "${metadata}/worker-network-endpoints")" ||
    { echo "error: no TPU VM metadata (worker-network-endpoints) on $(hostname)" >&2; exit 1; }
  local -a hosts
  IFS=, read -r -a hosts <<<"${endpoints}"
  # Entries are "name:id:ip" or a bare address; hosts are listed in worker order, host 0 first.
  local coordinator="${hosts[0]##*:}"
  export JAX_COORDINATOR_ADDRESS="${coordinator}:${port}"
  export JAX_NUM_PROCESSES="${#hosts[@]}"
  export JAX_PROCESS_ID="${worker_id}"
  echo "host ${JAX_PROCESS_ID} of ${JAX_NUM_PROCESSES} ($(hostname)), coordinator ${JAX_COORDINATOR_ADDRESS}" >&2
  if [[ "${background}" == 1 ]]; then
    # Detached from the ssh session: a closed connection does not end the run.
    nohup "${python}" -m spidr_jax.train "$@" >"${HOME}/spidr_jax_train.log" 2>&1 </dev/null &
    echo $! >"${HOME}/spidr_jax_train.pid"
    echo "host ${JAX_PROCESS_ID}: trainer started (pid $!), log ${HOME}/spidr_jax_train.log" >&2
  else
    exec "${python}" -m spidr_jax.train "$@"
  fi
}

if [[ "${1:-}" == --on-host ]]; then
  shift
  on_host "$@"
  exit
fi

# ---- on this machine: parse the options ------------------------------------------------------------------------
NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${TPU_PROJECT:-}"
SOURCE="${SPIDR_JAX_SOURCE:-${REPO_DIR}}"
REF="${SPIDR_JAX_REF:-}"
REMOTE_DIR="spidr_jax"
PYTHON="python3"
PORT=8482  # JAX's default coordinator port on Cloud TPU
INSTALL=1
TRAIN=1
BACKGROUND=0
STOP=0
DRY_RUN=0
ENVS=()
GCLOUD_ARGS=()

# Options that take a value accept both "--opt VALUE" and "--opt=VALUE".
value() {
  [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"
  printf '%s' "$2"
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=* | --zone=* | --project=* | --source=* | --ref=* | --remote-dir=* | --python=* | --env=* | --port=* | \
      --gcloud-arg=*)
      opt="${1%%=*}"
      val="${1#*=}"
      shift
      set -- "${opt}" "${val}" "$@"
      continue
      ;;
    --name) NAME="$(value "$@")"; shift 2 ;;
    --zone) ZONE="$(value "$@")"; shift 2 ;;
    --project) PROJECT="$(value "$@")"; shift 2 ;;
    --source) SOURCE="$(value "$@")"; shift 2 ;;
    --ref) REF="$(value "$@")"; shift 2 ;;
    --remote-dir) REMOTE_DIR="$(value "$@")"; shift 2 ;;
    --python) PYTHON="$(value "$@")"; shift 2 ;;
    --env) ENVS+=("$(value "$@")"); shift 2 ;;
    --port) PORT="$(value "$@")"; shift 2 ;;
    --gcloud-arg) GCLOUD_ARGS+=("$(value "$@")"); shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --install-only) TRAIN=0; shift ;;
    --background) BACKGROUND=1; shift ;;
    --stop) STOP=1; INSTALL=0; TRAIN=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage 0 ;;
    --config=* | --config.*) die "give the config file first, then the --config.X.Y overrides" ;;
    --*) die "unknown option $1" ;;
    *) break ;;
  esac
done

[[ -n "${NAME}" ]] || die "no TPU VM name (--name or TPU_NAME)"
[[ -n "${ZONE}" ]] || die "no zone (--zone or TPU_ZONE)"
[[ "${PORT}" =~ ^[0-9]+$ ]] || die "--port must be a number, got '${PORT}'"
[[ "${REMOTE_DIR}" != /* && "${REMOTE_DIR}" != *..* && -n "${REMOTE_DIR}" ]] ||
  die "--remote-dir must be a path inside the home directory, got '${REMOTE_DIR}'"
for env in "${ENVS[@]}"; do
  [[ "${env}" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env takes NAME=VALUE, got '${env}'"
done

CONFIG=""
if [[ ${TRAIN} -eq 1 ]]; then
  [[ $# -ge 1 ]] || die "no config file"
  CONFIG="$1"
  shift
  for arg in "$@"; do
    case "${arg}" in
      --config.*=*) ;;
      *) die "after the config file only --config.SECTION.FIELD=VALUE overrides are allowed, got '${arg}'" ;;
    esac
    # The trainer takes run.workdir as a local path: a URL would become a different local directory on each host.
    if [[ "${arg}" == --config.run.workdir=*://* ]]; then
      die "run.workdir must be a path every host mounts (e.g. a bucket mounted with gcsfuse), not a URL: ${arg}"
    fi
  done
  if [[ -d "${SOURCE}" && ! -f "${SOURCE}/${CONFIG%%:*}" ]]; then
    die "config file '${CONFIG%%:*}' not found in ${SOURCE} (give it relative to the checkout)"
  fi
elif [[ $# -gt 0 ]]; then
  die "unexpected arguments: $*"
fi

GCLOUD_TARGET=(--zone "${ZONE}")
[[ -z "${PROJECT}" ]] || GCLOUD_TARGET+=(--project "${PROJECT}")

# One word, quoted for a POSIX shell (the hosts' login shell runs the commands): as is when that is safe, else in
# single quotes.
q() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Print a command (quoted as a shell would read it), then run it unless --dry-run.
run() {
  local word line="+"
  for word in "$@"; do
    line+=" $(q "${word}")"
  done
  echo "${line}"
  [[ ${DRY_RUN} -eq 1 ]] || "$@"
}

# Run a shell command on every host of the slice.
on_all_hosts() {
  run gcloud compute tpus tpu-vm ssh "${NAME}" "${GCLOUD_TARGET[@]}" --worker=all "${GCLOUD_ARGS[@]}" --command "$1"
}

# ---- (1) install --------------------------------------------------------------------------------------------------
if [[ ${INSTALL} -eq 1 ]]; then
  dir="\$HOME/$(q "${REMOTE_DIR}")"
  if [[ -d "${SOURCE}" ]]; then
    # A local checkout: ship exactly its committed tree (no build outputs, virtual environments or data).
    git -C "${SOURCE}" rev-parse --git-dir >/dev/null 2>&1 || die "--source ${SOURCE} is not a git checkout"
    if [[ -n "$(git -C "${SOURCE}" status --porcelain --untracked-files=no)" ]]; then
      echo "warning: ${SOURCE} has uncommitted changes; the hosts get its last commit" >&2
    fi
    archive="$(mktemp "${TMPDIR:-/tmp}/spidr_jax.XXXXXX")"
    trap 'rm -f "${archive}"' EXIT
    run git -C "${SOURCE}" archive --format=tar.gz --output="${archive}" HEAD
    run gcloud compute tpus tpu-vm scp "${archive}" "${NAME}:spidr_jax.tar.gz" "${GCLOUD_TARGET[@]}" --worker=all \
      "${GCLOUD_ARGS[@]}"
    fetch="mkdir -p ${dir} && tar -xzf \$HOME/spidr_jax.tar.gz -C ${dir} && rm \$HOME/spidr_jax.tar.gz"
  else
    # A git URL: clone it on each host (or update an earlier clone), at REF or the default branch.
    fetch="{ [ -d ${dir}/.git ] || git clone --quiet $(q "${SOURCE}") ${dir}; }"
    fetch+=" && git -C ${dir} fetch --quiet origin $(q "${REF:-HEAD}")"
    fetch+=" && git -C ${dir} checkout --quiet --detach FETCH_HEAD"
  fi
  # spidr_jax needs Python >= 3.11 (Ubuntu 22.04 TPU images ship 3.10: pass --python of a newer one, e.g. a venv).
  check="$(q "${PYTHON}") -c 'import sys; sys.exit(sys.version_info < (3, 11))'"
  check+=" || { echo \"error: \$(hostname): ${PYTHON} is older than Python 3.11 (see --python)\" >&2; exit 1; }"
  # JAX's TPU build ("jax[tpu]", with libtpu) in the same resolution as the package's own requirements.
  on_all_hosts "set -e; ${check}; ${fetch} && $(q "${PYTHON}") -m pip install --quiet -e ${dir} 'jax[tpu]'"
fi

# ---- (2) train ------------------------------------------------------------------------------------------------------
if [[ ${TRAIN} -eq 1 ]]; then
  remote="cd \$HOME/$(q "${REMOTE_DIR}") && bash launch/tpu_pod.sh --on-host $(q "${PYTHON}") ${PORT} ${BACKGROUND}"
  for env in "${ENVS[@]}"; do
    remote+=" $(q "${env}")"
  done
  remote+=" -- $(q "--config=${CONFIG}")"
  for arg in "$@"; do
    remote+=" $(q "${arg}")"
  done
  on_all_hosts "${remote}"
  if [[ ${BACKGROUND} -eq 1 ]]; then
    echo "trainers started; process 0's progress: gcloud compute tpus tpu-vm ssh ${NAME} --zone ${ZONE} --worker=0" \
      "--command 'tail -f ${LOG_FILE}'" >&2
  fi
fi

# ---- stop ---------------------------------------------------------------------------------------------------------
if [[ ${STOP} -eq 1 ]]; then
  # SIGTERM to every trainer: they save a checkpoint after the step in flight and exit; the same launch resumes.
  on_all_hosts "if [ -f ${PID_FILE} ]; then kill -TERM \$(cat ${PID_FILE}) && echo \"stopping \$(hostname)\"; fi"
fi
