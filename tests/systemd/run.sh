#!/usr/bin/env bash
# The daemon role on a real systemd: `make test-systemd` (CI runs it as its own job).
#
#   sudo tests/systemd/run.sh [pytest args...]
#
# Runs as root on Debian 12. Installs what it needs (systemd-nspawn, debootstrap), builds the
# Debian 12 and 13 container roots once (cached in .cache/systemd-rootfs), then runs
# tests/systemd with pytest: the static role checks (test_role.py) and three containers, one
# Debian 12 and two Debian 13, on a private network (test_fleet.py). Extra arguments go to
# pytest, e.g. `-k watchdog` or `-s` for timings. On a 2-core machine shared with other work
# (load 12-14): about 7.5 min warm; cold, the two roots build side by side (~2 min) and the
# wheelhouse for both Pythons takes ~20 s. Whatever happens, the trap below stops this run's
# containers and removes its namespaces.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $(id -u) -ne 0 ]]; then
    echo "run.sh: needs root (network namespaces, systemd-nspawn)" >&2
    exit 2
fi

# systemd-nspawn copies /dev/null into each container and refuses anything but the device.
if [[ ! -c /dev/null ]]; then
    echo "run.sh: /dev/null is not a character device (a rename replaced it?);" \
        "restore it: rm -f /dev/null && mknod -m 666 /dev/null c 1 3" >&2
    exit 2
fi

need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v ip >/dev/null || need+=(iproute2)
command -v ssh >/dev/null || need+=(openssh-client)
command -v setpriv >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
    echo "run.sh: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[[ -x .venv/bin/pytest ]] || make venv

export DISTSYNC_SYSTEMD_RUN_ID="${DISTSYNC_SYSTEMD_RUN_ID:-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}"
export DISTSYNC_SYSTEMD_REQUIRED=1
state=".cache/systemd-run/$DISTSYNC_SYSTEMD_RUN_ID"

# The safety net behind the test's own try/finally: containers (by the pids it recorded)
# and namespaces (by the names it recorded) of this run only; a module with a fleet of its
# own (test_salt.py) records them in "$state"-NAME.
cleanup() {
    local dir
    for dir in "$state" "$state"-*; do
        [[ -d $dir ]] && cleanup_fleet "$dir"
    done
    return 0
}
cleanup_fleet() {
    local state=$1 pid ns i
    if [[ -f $state/pids ]]; then
        while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$state/pids"
        for i in $(seq 40); do
            alive=0
            while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$state/pids"
            ((alive)) || break
            sleep 0.5
        done
        while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$state/pids"
    fi
    if [[ -f $state/netns ]]; then
        while read -r ns; do
            [[ -e /run/netns/$ns ]] || continue
            for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        done <"$state/netns"
    fi
}
trap cleanup EXIT INT TERM

start=$SECONDS
status=0
.venv/bin/python -m pytest tests/systemd -p no:cacheprovider -ra "$@" || status=$?
echo "run.sh: tests/systemd took $((SECONDS - start)) s" >&2
exit $status
