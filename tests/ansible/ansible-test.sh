#!/usr/bin/env bash
# Run ansible-test on this collection: ansible-test needs the collection under
# .../ansible_collections/distsync/core, so the tracked files are copied into a scratch tree.
# Usage: tests/ansible/ansible-test.sh sanity|units|integration [ansible-test args...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${VENV:-$repo/.venv}
# One scratch tree per checkout: two checkouts testing at once must not delete each other's.
checkout_id=$(printf %s "$repo" | sha256sum | cut -c1-12)
scratch=${DISTSYNC_ANSIBLE_TEST_DIR:-${TMPDIR:-/tmp}/distsync-ansible-test-$checkout_id}
dest=$scratch/ansible_collections/distsync/core
rm -rf "$dest"
mkdir -p "$dest"
# What the built collection ships (tracked and new files, less galaxy.yml's build_ignore of
# development-only trees): sanity checks what users install. The engine's own lint is ruff+mypy;
# the Salt content (salt/: Salt's loader supplies its __salt__ globals) is ruff's and
# tests/salt's, not Ansible's.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) \
  | grep -zvE '^(tests/(engine|system|systemd|salt)/|salt/|bench/|scripts/|\.ci/|tests/conftest\.py)' \
  | (cd "$repo" && xargs -0 -r cp --parents -t "$dest")

# ansible-test --venv fetches a get-pip script from a host that is not reachable here and does
# not check its hash: seed its cache with a shim that bootstraps pip with ensurepip instead.
export HOME=${DISTSYNC_ANSIBLE_TEST_HOME:-$repo/.cache/ansible-test-home}
cache=$HOME/.ansible/test/cache
mkdir -p "$cache"
for version in 24.2 23.1.2 25.0.1 25.1.1; do
  cat > "$cache/get_pip_${version//./_}.py" <<'PY'
import subprocess, sys
subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True)
# get-pip's own flags mean nothing to `pip install`.
args = [a for a in sys.argv[1:] if a not in ("--disable-pip-version-check", "--no-setuptools", "--no-wheel")]
sys.exit(subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]).returncode)
PY
done

cd "$dest"
command=$1
shift
export PATH=$venv/bin:$PATH
case $command in
  sanity) exec ansible-test sanity --venv --python 3.11 "$@" ;;
  units) exec ansible-test units --local --python 3.11 "$@" ;;
  integration)
    # A real S3- and IAM-compatible server on loopback for the s3 targets (ministack, files
    # under a scratch directory), stopped whatever happens.
    store=$(mktemp -d)
    port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    BIND_HOST=127.0.0.1 GATEWAY_PORT=$port S3_DATA_DIR=$store/data "$venv/bin/ministack" >"$store/log" 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$store"' EXIT
    for _try in $(seq 100); do
      (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    # ansible-test does not pass the environment through; it does pass this file as extra vars.
    echo "distsync_test_endpoint: http://127.0.0.1:$port" > tests/integration/integration_config.yml
    ansible-test integration --local --python 3.11 "$@"
    ;;
  *) echo "unknown command $command" >&2; exit 2 ;;
esac
