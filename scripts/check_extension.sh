#!/usr/bin/env bash
# Check that the jupyter_elastic server extension and the jupyter-elastic lab extension are
# installed, enabled and valid ("OK") in the current environment.
#
#   scripts/check_extension.sh            # uses `jupyter` from PATH
#   JUPYTER=.venv/bin/jupyter scripts/check_extension.sh
#
# Exit status 0 when both are enabled and OK; 1 otherwise, with the listing shown.
set -euo pipefail

JUPYTER="${JUPYTER:-jupyter}"
status=0

# Both commands write their listing to stderr; colours are stripped before matching.
strip() { sed -e 's/\x1b\[[0-9;]*m//g'; }

server_list="$("$JUPYTER" server extension list 2>&1 | strip)"
# The listing is: "    jupyter_elastic enabled", "    - Validating jupyter_elastic...",
# "      jupyter_elastic 0.1.0 OK".
# Listed per config directory: any "disabled" entry may override the "enabled" one, so fail.
if grep -Eq '^[[:space:]]*jupyter_elastic[[:space:]]+enabled' <<<"$server_list" \
  && ! grep -Eq '^[[:space:]]*jupyter_elastic[[:space:]]+disabled' <<<"$server_list" \
  && grep -Eq '^[[:space:]]*jupyter_elastic[[:space:]]+[0-9][^[:space:]]*[[:space:]]+OK' <<<"$server_list"; then
  echo "ok: server extension jupyter_elastic is enabled and OK"
else
  echo "FAIL: server extension jupyter_elastic is not enabled and OK:" >&2
  echo "$server_list" >&2
  status=1
fi

lab_list="$("$JUPYTER" labextension list 2>&1 | strip)"
if grep -Eq '^[[:space:]]*jupyter-elastic v[0-9][^[:space:]]*[[:space:]]+enabled[[:space:]]+OK' <<<"$lab_list" \
  && ! grep -Eq '^[[:space:]]*jupyter-elastic v[0-9][^[:space:]]*[[:space:]]+disabled' <<<"$lab_list"; then
  echo "ok: lab extension jupyter-elastic is enabled and OK"
else
  echo "FAIL: lab extension jupyter-elastic is not enabled and OK:" >&2
  echo "$lab_list" >&2
  status=1
fi

exit "$status"
