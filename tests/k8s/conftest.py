import copy

import pytest

from proving.manifests import (
    MANIFEST,
    MONITORING_DIR,
    Doc,
    load_directory,
    load_documents,
    package_version,
)


@pytest.fixture(scope="session")
def _manifest_docs() -> list[Doc]:
    return load_documents(MANIFEST)


@pytest.fixture
def manifest_docs(_manifest_docs: list[Doc]) -> list[Doc]:
    """The objects in user_hasher.yaml; a fresh copy, so a test may mutate it."""
    return copy.deepcopy(_manifest_docs)


@pytest.fixture
def monitoring_docs() -> list[Doc]:
    return load_directory(MONITORING_DIR)


@pytest.fixture(scope="session")
def version() -> str:
    return package_version()
