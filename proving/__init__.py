"""The proving tools: what the tests, `make bench`, `make rehearse` and `make rollout-check`
use to prove the service, kept apart from the service (src/) and from the tests that use them.

- openloop: the open-loop HTTP load generator (standard library only: `make rollout-check`
  ships this one file into its Job)
- contract: the brief's example (user id, salt, hash) that every proof checks against
- service: a real `python -m user_hasher` process on a free loopback port (the one launcher:
  tests, `make bench`, the local rehearsal), and one HTTP GET
- waiting: polling until a condition holds, bounded in time
- docker: building the image and running containers of it
- kubectl: kubectl against any context, and watching objects
- steady: when a Deployment's rollout is done and all its pods serve
- manifests: loading user_hasher.yaml and finding objects in it
- local_cluster: the local single-node Kubernetes of ../shared/kube
- minikube_stand_in: the Makefile's minikube steps for that local cluster
- prometheus: a real Prometheus server
- capture: tcpdump on an interface, and which connections a captured ICMP rejection names

The zero-downtime harness that drives these (scenarios, the observer, the report and its
gates) is rehearsal/. Tools raise named errors; none works by `assert`, so a failing check
says what failed whether or not Python runs with -O, and wherever the tool is used.
"""
