#!/usr/bin/env bash
# The kubectl half of `make minikube-deploy` and `make rollout`: puts one exact build on the
# cluster and waits until it serves.
#   deploy.sh apply IMAGE_REF   apply user_hasher.yaml with the Deployment's image set to
#                               IMAGE_REF (a re-apply changes nothing), then wait
#   deploy.sh roll IMAGE_REF    roll the Deployment to IMAGE_REF, or restart its pods when
#                               IMAGE_REF runs already, then wait
# Env (the Makefile sets them): KUBE_CONTEXT, NAMESPACE, DEPLOYMENT, MANIFEST, ROLLOUT_TIMEOUT.
set -euo pipefail

: "${KUBE_CONTEXT:?}" "${NAMESPACE:?}" "${DEPLOYMENT:?}" "${MANIFEST:?}" "${ROLLOUT_TIMEOUT:?}"
# A new Deployment starts at 1 replica and the HPA raises it to its minimum at its first
# sync, within seconds; this bounds the wait for that.
readonly HPA_FLOOR_WAIT_SECONDS=60

if [[ $# -ne 2 || -z $2 ]]; then
  echo "usage: $0 apply|roll IMAGE_REF" >&2
  exit 2
fi
action=$1 image_ref=$2
kubectl=(kubectl --context "$KUBE_CONTEXT")
in_namespace=("${kubectl[@]}" --namespace "$NAMESPACE")

# The running pod template's image (the container carries the Deployment's name).
running_image() {
  "${in_namespace[@]}" get "deployment/$DEPLOYMENT" \
    -o "jsonpath={.spec.template.spec.containers[?(@.name==\"$DEPLOYMENT\")].image}"
}

wait_until_served() {
  local floor replicas waited
  floor=$("${in_namespace[@]}" get "hpa/$DEPLOYMENT" -o 'jsonpath={.spec.minReplicas}')
  for ((waited = 0; ; waited++)); do
    replicas=$("${in_namespace[@]}" get "deployment/$DEPLOYMENT" -o 'jsonpath={.spec.replicas}')
    ((replicas >= floor)) && break
    if ((waited >= HPA_FLOOR_WAIT_SECONDS)); then
      echo "deploy: the HPA did not raise $DEPLOYMENT to $floor replicas in ${waited} s" >&2
      exit 1
    fi
    sleep 1
  done
  "${in_namespace[@]}" rollout status "deployment/$DEPLOYMENT" --timeout="$ROLLOUT_TIMEOUT"
  echo "deploy: $DEPLOYMENT runs $(running_image) on $replicas replicas"
}

case $action in
  apply)
    # The manifest as committed, with only the Deployment's image line replaced, in one
    # `kubectl apply`: every other field is exactly what user_hasher.yaml says, and the
    # replica count stays the HPA's (the Deployment sets none).
    image_line="^([[:space:]]+image: )${image_ref%:*}:[^[:space:]]+\$"
    if [[ $(grep -c -E "$image_line" "$MANIFEST") != 1 ]]; then
      echo "deploy: $MANIFEST has no single image line for ${image_ref%:*} to point at $image_ref" >&2
      exit 1
    fi
    sed -E "s#$image_line#\\1$image_ref#" "$MANIFEST" | "${kubectl[@]}" apply -f -
    wait_until_served
    ;;
  roll)
    if [[ $(running_image) == "$image_ref" ]]; then
      echo "deploy: $image_ref runs already; restarting its pods"
      "${in_namespace[@]}" rollout restart "deployment/$DEPLOYMENT"
    else
      "${in_namespace[@]}" set image "deployment/$DEPLOYMENT" "$DEPLOYMENT=$image_ref"
    fi
    wait_until_served
    ;;
  *)
    echo "usage: $0 apply|roll IMAGE_REF" >&2
    exit 2
    ;;
esac
