"""`make sbom`: the CycloneDX SBOM of the image `make image` built, read from the image itself."""

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from proving.docker import (
    BUILD_TIMEOUT_SECONDS,
    DOCKER,
    REPO_ROOT,
    Image,
    docker,
    inspect_image,
)
from proving.manifests import package_version as project_version
from tests.support.locks import lock_path, normalized, read_pins

pytestmark = pytest.mark.docker

SBOM_DIR = REPO_ROOT / "build" / "sbom"
# `make sbom` took about half a minute here on a busy machine (most of it starting Python).
SBOM_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True)
class Sbom:
    document: dict[str, Any]
    path: Path
    seconds: float

    def components(self) -> dict[str, dict[str, Any]]:
        return {
            normalized(component["name"]): component for component in self.document["components"]
        }


def sbom_file(output_dir: Path, ref: str) -> Path:
    """Where the generator writes the SBOM of `ref` (one file per build)."""
    return output_dir / f"{ref.replace('/', '_').replace(':', '_')}.cdx.json"


@pytest.fixture(scope="module")
def image_sbom(container_image: Image) -> Sbom:
    path = sbom_file(SBOM_DIR, container_image.ref)
    path.unlink(missing_ok=True)
    started = time.monotonic()
    result = subprocess.run(
        ["make", "--no-print-directory", "sbom"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SBOM_TIMEOUT_SECONDS,
        check=False,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    return Sbom(json.loads(path.read_text()), path, seconds)


def test_lists_exactly_the_runtime_lock_pins_and_the_package(image_sbom: Sbom) -> None:
    locked = {pin.name: pin.version for pin in read_pins(lock_path("runtime").read_text()).values()}
    listed = {name: component["version"] for name, component in image_sbom.components().items()}
    assert listed == {**locked, "user-hasher": project_version()}
    # One component per distribution: no name listed twice.
    assert len(image_sbom.document["components"]) == len(listed)
    print(
        f"make sbom: {len(listed)} components in {image_sbom.seconds:.1f} s "
        f"({image_sbom.path.relative_to(REPO_ROOT)})"
    )


def test_every_component_has_a_name_a_version_and_its_pypi_purl(image_sbom: Sbom) -> None:
    for name, component in image_sbom.components().items():
        assert component["name"]
        assert component["version"]
        assert component["purl"] == f"pkg:pypi/{name}@{component['version']}", component


def test_names_the_image_it_describes(image_sbom: Sbom, container_image: Image) -> None:
    """The image's ID and the build's unique reference, so SBOM and image can be matched."""
    image_id = inspect_image(container_image.ref)["Id"]
    subject = image_sbom.document["metadata"]["component"]
    properties = {item["name"]: item["value"] for item in subject["properties"]}
    assert subject["type"] == "container"
    assert subject["bom-ref"] == container_image.ref
    assert f"{subject['name']}:{subject['version']}" == container_image.ref
    assert properties["user_hasher:image:id"] == image_id
    assert properties["user_hasher:image:ref"] == container_image.ref
    assert subject["purl"] == f"pkg:docker/{subject['name']}@{image_id.replace(':', '%3A')}"
    assert subject["hashes"] == [{"alg": "SHA-256", "content": image_id.removeprefix("sha256:")}]
    assert properties["org.opencontainers.image.version"] == project_version()


def test_is_valid_cyclonedx(image_sbom: Sbom) -> None:
    document = image_sbom.document
    assert document["bomFormat"] == "CycloneDX"
    validator = JsonStrictValidator(SchemaVersion.from_version(document["specVersion"]))
    assert validator.validate_str(image_sbom.path.read_text()) is None


def test_reads_what_the_image_holds_not_the_lock(container_image: Image, tmp_path: Path) -> None:
    """An image derived from the build, with one distribution added to its venv and one removed:
    its SBOM shows both changes, which the lock does not know about."""
    site_packages = "$(echo /opt/venv/lib/python3*/site-packages)"
    dockerfile = textwrap.dedent(f"""\
        FROM {container_image.ref}
        USER root
        RUN site={site_packages} \\
            && mkdir "$site/sbom_canary-1.2.3.dist-info" \\
            && printf 'Metadata-Version: 2.1\\nName: sbom-canary\\nVersion: 1.2.3\\n' \\
                > "$site/sbom_canary-1.2.3.dist-info/METADATA" \\
            && rm -r "$site"/quantile_python-*.dist-info
        """)
    iid = tmp_path / "iid"
    subprocess.run(
        [DOCKER, "build", "--network=none", "--force-rm", "--iidfile", str(iid), "-"],
        input=dockerfile,
        text=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=True,
    )
    image_id = iid.read_text().strip()
    ref = "user-hasher-sbom-canary:test"
    try:
        generator = [sys.executable, "scripts/docker/image_sbom.py"]
        subprocess.run(
            [*generator, "--image", image_id, "--ref", ref, "--output-dir", str(tmp_path)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            timeout=SBOM_TIMEOUT_SECONDS,
        )
    finally:
        docker("rmi", image_id)
    components = {
        normalized(component["name"]): component["version"]
        for component in json.loads(sbom_file(tmp_path, ref).read_text())["components"]
    }
    assert components["sbom-canary"] == "1.2.3"
    assert "quantile-python" not in components
