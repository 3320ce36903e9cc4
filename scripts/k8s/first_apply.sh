#!/usr/bin/env bash
# Apply user_hasher.yaml to a cluster, checking each step, with kubectl alone:
#   scripts/k8s/first_apply.sh CONTEXT [MANIFEST]
# Safe on a fresh cluster and on one that runs the app already. Prints each kubectl command
# before it runs it; ends with `first_apply: PASS` and exit 0, or `first_apply: FAIL: ...`
# and exit 1. docs/operating.md, "Checking a real cluster by hand", has the steps after it.
# tests/cluster/test_admission.py runs it on a fresh cluster, and on a weakened copy that must fail.
set -euo pipefail

context=${1:?usage: scripts/k8s/first_apply.sh CONTEXT [MANIFEST]}
manifest=${2:-user_hasher.yaml}
namespace=user-hasher
deployment=user-hasher
# The HPA's minReplicas: a new Deployment starts with one pod until the HPA raises it.
min_replicas=3
stderr_file=$(mktemp)
trap 'rm -f "$stderr_file"' EXIT

fail() {
  echo "first_apply: FAIL: $*" >&2
  exit 1
}

# Runs `kubectl --context CONTEXT ARGS`, shown first; fails on a non-zero exit and on any
# `Warning:` line, which is how Pod Security admission reports a Deployment whose pods it
# would refuse (the Deployment itself is admitted).
kubectl_checked() {
  echo "+ kubectl --context $context $*" >&2
  if ! kubectl --context "$context" "$@" 2>"$stderr_file"; then
    cat "$stderr_file" >&2
    fail "kubectl $1 exited non-zero"
  fi
  cat "$stderr_file" >&2
  if grep -q '^Warning:' "$stderr_file"; then
    fail "the API server warned (above): fix the manifest before it is applied"
  fi
}

# 1. The namespace alone: a server-side dry run creates nothing, so on a fresh cluster every
#    object inside the namespace would be refused (`namespaces "user-hasher" not found`).
#    Only the Namespace carries the Pod Security labels, so this selects exactly it.
kubectl_checked apply -f "$manifest" --selector pod-security.kubernetes.io/enforce
# 2. Server-side validation and admission (Pod Security `restricted`), changing nothing.
kubectl_checked apply --dry-run=server -f "$manifest"
# 3. Apply, then wait for the HPA's minimum and for the rollout.
kubectl_checked apply -f "$manifest"
kubectl_checked --namespace "$namespace" wait "deployment/$deployment" \
  "--for=jsonpath={.spec.replicas}=$min_replicas" --timeout=120s
kubectl_checked --namespace "$namespace" rollout status "deployment/$deployment" --timeout=300s
# 4. Nothing drifted: the cluster holds what the file says (kubectl diff exits 1 on a difference).
echo "+ kubectl --context $context diff -f $manifest" >&2
kubectl --context "$context" diff -f "$manifest" || fail "kubectl diff found a difference (above)"
echo "first_apply: PASS: $manifest applied to $context with no warning and no drift"
