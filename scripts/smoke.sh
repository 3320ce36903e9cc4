#!/usr/bin/env bash
# Smoke test of a running user_hasher, wherever it runs:
#   scripts/smoke.sh BASE_URL METRICS_URL
#   e.g. scripts/smoke.sh http://127.0.0.1:8000 http://127.0.0.1:9797
# BASE_URL is the service port (PORT), METRICS_URL the metrics port (METRICS_PORT).
# Checks the service's contract (TESTUSERID with salt TESTSALT gives exactly the hash
# below), that /metrics is served on the metrics port and not on the service port, and
# that it labels every user_hasher_ series with the app version, pod IP and node IP, none
# of them empty or "unknown" (unset downward-API env).
# Prints one line per check; exits 1 on the first mismatch, 2 on bad usage.
# Portable to macOS (bash 3.2, BSD grep and cmp): it also runs from laptops.
set -euo pipefail

readonly EXPECTED_HASH_BODY='"9f1021612c2a810d26472a66e4064f6608d52fd3"'
readonly IDENTITY_LABELS=(app_version pod_ip node_ip)
# Bounded so a hung service fails the smoke test instead of hanging it:
# 3 s to connect, 10 s for the whole request (a cold pod answers in milliseconds).
readonly CURL_OPTS=(--silent --show-error --connect-timeout 3 --max-time 10)

if [[ $# -ne 2 || -z $1 || -z $2 ]]; then
  echo "usage: $0 BASE_URL METRICS_URL" >&2
  exit 2
fi
base_url=${1%/}
metrics_url=${2%/}
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

fail() {
  echo "smoke: FAIL: $*" >&2
  exit 1
}

# get PATH [URL]: GET URL (BASE_URL by default) + PATH; the body goes to $workdir/body;
# prints the HTTP status (000 if no answer).
get() {
  curl "${CURL_OPTS[@]}" --output "$workdir/body" --write-out '%{http_code}' \
    "${2:-$base_url}$1" || true
}

status=$(get /readyz)
[[ $status == 200 ]] || fail "GET /readyz answered $status, want 200"
echo "smoke: ok: /readyz is 200"

status=$(get '/user_hash?user_id=TESTUSERID')
body=$(<"$workdir/body")
[[ $status == 200 ]] || fail "GET /user_hash answered $status, want 200 (body: $body)"
# Byte for byte: $(<file) would drop a trailing newline the contract does not have.
printf '%s' "$EXPECTED_HASH_BODY" | cmp -s - "$workdir/body" ||
  fail "GET /user_hash?user_id=TESTUSERID returned $body, want $EXPECTED_HASH_BODY (is USER_SALT TESTSALT?)"
echo "smoke: ok: /user_hash?user_id=TESTUSERID is $body"

status=$(get /metrics)
[[ $status == 404 ]] || fail "GET /metrics on the service port answered $status, want 404"
echo "smoke: ok: /metrics is not served on the service port"

status=$(get /metrics "$metrics_url")
[[ $status == 200 ]] || fail "GET $metrics_url/metrics answered $status, want 200"
grep -E '^user_hasher_[a-z_]+(\{|[[:space:]])' "$workdir/body" >"$workdir/samples" ||
  fail "/metrics has no user_hasher_ series"
for label in "${IDENTITY_LABELS[@]}"; do
  # A series that lacks the label, or has it empty or "unknown", is a mismatch.
  bad=$(grep -m 1 -v -E "[{,]${label}=\"[^\"]+\"" "$workdir/samples" || true)
  [[ -z $bad ]] || fail "/metrics series lacking the $label label: $bad"
  bad=$(grep -m 1 -E "[{,]${label}=\"unknown\"" "$workdir/samples" || true)
  [[ -z $bad ]] || fail "/metrics series with $label=\"unknown\" (is its env variable set?): $bad"
  value=$(grep -m 1 -o -E "[{,]${label}=\"[^\"]+\"" "$workdir/samples" | cut -d'"' -f2)
  echo "smoke: ok: every user_hasher_ series has $label (e.g. $value)"
done
echo "smoke: PASS $base_url, metrics $metrics_url ($(wc -l <"$workdir/samples") user_hasher_ samples checked)"
