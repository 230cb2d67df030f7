#!/usr/bin/env bash
# Run a benchmark script in the reference environment (timm, vit-pytorch) with this checkout's
# virtualenv added as a site directory, so vitzoo and timm share one process (see README.md).
#   benchmarks/peer_python.sh benchmarks/deploy_speed.py --scenario small --threads 2
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
refenv="${VITZOO_PEER_ENV:-/work/refenv}"
site="$(ls -d "$here"/.venv/lib/python3*/site-packages | head -1)"
exec "$refenv/bin/python" -c "import runpy, site, sys; site.addsitedir('$site'); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')" "$@"
