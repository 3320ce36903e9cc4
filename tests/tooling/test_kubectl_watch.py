"""proving.kubectl.Watch outlives its kubectl: when `kubectl get --watch` ends (its connection to
the API server lost, as when the API server is stopped), the watch lists again, records what
changed meanwhile, and watches on. A fake kubectl (a script) plays the API server."""

import json
import time
from pathlib import Path

import pytest

from proving import kubectl as kubectl_module
from proving.kubectl import Kubectl, KubectlError, Watch


def pod(name: str, phase: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "status": {"phase": phase}}


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    first = [
        {"type": "ADDED", "object": pod("a", "Running")},
        {"type": "ADDED", "object": pod("b", "Running")},
        # What a lost connection can end with: a Status, no object name.
        {"type": "ERROR", "object": {"kind": "Status", "metadata": {}, "reason": "Expired"}},
    ]
    listed = {
        "metadata": {"resourceVersion": "41"},
        "items": [pod("a", "Succeeded"), pod("c", "Running")],
    }
    later = json.dumps({"type": "ADDED", "object": pod("d", "Running")})
    script = tmp_path / "kubectl"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        # The watch again, from the list's resourceVersion, in the kubectl's namespace.
        '  *"--raw /api/v1/namespaces/default/pods?watch=1&resourceVersion=41")'
        f" echo '{later}'; exec sleep 30 ;;\n"
        f"  *--watch*) printf '%s\\n' {' '.join(repr(json.dumps(e)) for e in first)} ;;\n"
        f"  *\"--raw /api/v1/namespaces/default/pods?\") echo '{json.dumps(listed)}' ;;\n"
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(kubectl_module, "kubectl_binary", lambda: str(script))
    return script


def test_a_watch_lists_again_after_its_kubectl_ended(fake_kubectl: Path) -> None:
    watch = Watch(Kubectl(), "pods")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(watch.snapshot()) < 6:
            time.sleep(0.05)
    finally:
        events = watch.stop()
    seen = [(e.type, e.object["metadata"]["name"]) for e in events]
    assert seen == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        # the relist: b went meanwhile, a changed, c came
        ("DELETED", "b"),
        ("MODIFIED", "a"),
        ("MODIFIED", "c"),
        # and the watch goes on
        ("ADDED", "d"),
    ]
    assert events[3].object["status"]["phase"] == "Succeeded"
    assert watch.restarts == 1


def test_a_watch_of_a_resource_it_cannot_relist_is_refused_at_once() -> None:
    with pytest.raises(KubectlError, match="replicasets"):
        Watch(Kubectl(), "replicasets")
