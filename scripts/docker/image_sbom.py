"""Write a CycloneDX SBOM of a built image, from the packages installed in the image's venv.

    python scripts/docker/image_sbom.py --image IMAGE_ID --ref REF --output-dir build/sbom

`make sbom` runs it for the image `make image` built last. The packages come from the image
itself, never from the lock: the venv's `lib/` is copied out of a created (never started)
container, and cyclonedx-py reads its installed distributions. The document's
metadata.component is the image (its ID and its unique reference), so an SBOM file and an
image can be matched later. Every component carries a name, a version and a purl; the result
is validated against the CycloneDX JSON schema before it is written.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

DOCKER = os.environ.get("DOCKER", "docker")
SPEC_VERSION = "1.6"
# A namespace for this project's own properties (CycloneDX reserves `cdx:`).
PROPERTY_PREFIX = "user_hasher:image"
OCI_LABELS = (
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.source",
    "org.opencontainers.image.base.name",
)
DOCKER_CALL_TIMEOUT_SECONDS = 120.0


def docker(*args: str) -> bytes:
    result = subprocess.run(
        [DOCKER, *args], capture_output=True, timeout=DOCKER_CALL_TIMEOUT_SECONDS, check=False
    )
    if result.returncode != 0:
        sys.exit(f"image_sbom: docker {' '.join(args)} failed: {result.stderr.decode().strip()}")
    return result.stdout


def venv_of(config: dict[str, Any]) -> PurePosixPath:
    """The image's venv: its entrypoint is the venv's python (`/opt/venv/bin/python -m ...`)."""
    python = PurePosixPath(config["Entrypoint"][0])
    if python.parent.name != "bin":
        sys.exit(f"image_sbom: the entrypoint {python} is not a venv's bin/python")
    return python.parent.parent


def copy_out_site_packages(image_id: str, venv: PurePosixPath, into: Path) -> Path:
    """Copies the venv's lib/ out of a created (not started) container; returns site-packages."""
    container = docker("create", "--network=none", image_id).decode().strip()
    try:
        archive = docker("cp", f"{container}:{venv / 'lib'}", "-")
    finally:
        docker("rm", "--force", container)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    found = sorted(into.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        sys.exit(f"image_sbom: expected one site-packages under {venv}/lib, found {found}")
    return found[0]


def reading_venv(site_packages: Path, into: Path) -> Path:
    """A venv of this machine's Python whose site-packages is the image's.

    cyclonedx-py asks an interpreter for its sys.path; the image's own interpreter cannot
    run here, so a local venv stands in, and nothing but the image's files is on its path.
    """
    venv = into / "reader"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    own_site_packages = Path(
        sysconfig.get_path("purelib", "venv", vars={"base": str(venv), "platbase": str(venv)})
    )
    own_site_packages.rmdir()
    own_site_packages.symlink_to(site_packages.resolve(), target_is_directory=True)
    return venv


def generate(venv: Path, into: Path) -> dict[str, Any]:
    raw = into / "raw.cdx.json"
    cyclonedx_py = Path(sys.executable).parent / "cyclonedx-py"
    # --no-validate: the finished document is validated once, after describe_image (and
    # cyclonedx-py's warning that it skipped validation is no news, hence the capture).
    command = [cyclonedx_py, "environment", "--spec-version", SPEC_VERSION, "--no-validate"]
    result = subprocess.run(
        [*command, "--output-format", "JSON", "--output-file", raw, venv],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"image_sbom: cyclonedx-py failed:\n{result.stdout}{result.stderr}")
    return json.loads(raw.read_text())


def pypi_purl(name: str, version: str) -> str:
    return f"pkg:pypi/{quote(name.lower().replace('_', '-'))}@{quote(version)}"


def describe_image(sbom: dict[str, Any], image: dict[str, Any], ref: str) -> None:
    """Makes the image the SBOM's subject and gives every component a purl."""
    image_id = image["Id"]
    name, _, tag = ref.rpartition(":")
    labels = image["Config"].get("Labels") or {}
    properties = [
        {"name": f"{PROPERTY_PREFIX}:id", "value": image_id},
        {"name": f"{PROPERTY_PREFIX}:ref", "value": ref},
    ] + [{"name": label, "value": labels[label]} for label in OCI_LABELS if label in labels]
    sbom["metadata"]["component"] = {
        "type": "container",
        "bom-ref": ref,
        "name": name,
        "version": tag,
        "purl": f"pkg:docker/{quote(name)}@{quote(image_id)}",
        "hashes": [{"alg": "SHA-256", "content": image_id.removeprefix("sha256:")}],
        "properties": properties,
    }
    components = sbom.get("components", [])
    for component in components:
        # cyclonedx-py leaves packages installed from a local path without a purl (they are
        # not on any index): here that is the service itself, built from this tree.
        component.setdefault("purl", pypi_purl(component["name"], component["version"]))
    sbom.setdefault("dependencies", []).append(
        {"ref": ref, "dependsOn": sorted(component["bom-ref"] for component in components)}
    )


def validate(sbom_text: str) -> None:
    error = JsonStrictValidator(SchemaVersion.from_version(SPEC_VERSION)).validate_str(sbom_text)
    if error is not None:
        sys.exit(f"image_sbom: the SBOM is not valid CycloneDX {SPEC_VERSION}: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--image", required=True, help="the image ID (or any reference to it)")
    parser.add_argument("--ref", required=True, help="the build's unique reference (name:tag)")
    parser.add_argument("--output-dir", required=True, type=Path)
    args = parser.parse_args()

    image = json.loads(docker("image", "inspect", args.image))[0]
    with tempfile.TemporaryDirectory(prefix="image-sbom-") as scratch:
        scratch_dir = Path(scratch)
        site_packages = copy_out_site_packages(
            image["Id"], venv_of(image["Config"]), scratch_dir / "image"
        )
        sbom = generate(reading_venv(site_packages, scratch_dir), scratch_dir)
    describe_image(sbom, image, args.ref)
    sbom_text = json.dumps(sbom, indent=2) + "\n"
    validate(sbom_text)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    output = args.output_dir / f"{args.ref.replace('/', '_').replace(':', '_')}.cdx.json"
    output.write_text(sbom_text)
    print(f"sbom: {len(sbom['components'])} components of {args.ref} ({image['Id']}) in {output}")


if __name__ == "__main__":
    main()
