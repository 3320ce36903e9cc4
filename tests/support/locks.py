"""Read requirements/*.lock, and tamper with a copy of one, for the supply-chain tests.

A lock entry is `name==version \\` followed by one `--hash=sha256:...` line per file the index
holds for that version (wheels, sdist) and `# via` comments; pip accepts any of the listed
files. Two ways a lock can go wrong, as copies:
- `with_hashes_replaced`: an index serving a different file for a pinned version (none of the
  package's listed hashes matches any more). Any hash in a lock turns pip's checking on.
- `without_hashes`: a lock re-made without --generate-hashes. Only --require-hashes on the
  install command refuses it; without the flag pip would install whatever the index serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK_DIR = REPO_ROOT / "requirements"
# Every lock `make lock` and `make checkov-lock` write.
LOCK_NAMES = ("runtime", "build", "dev", "checkov")

ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)[^\n]*(?:\n {4}[^\n]*)*", re.M)
HASH = re.compile(r"--hash=sha256:([0-9a-f]*)")
# The sha256 of nothing any index serves.
TAMPERED_HASH = "0" * 64
# A direct runtime dependency: pinned in the runtime and the dev lock alike.
TAMPERED_PACKAGE = "quart"
# The ways a lock copy can be broken (`broken_lock`).
BROKEN_LOCK_CASES = ("a hash no file has", "no hashes at all")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...]


def normalized(name: str) -> str:
    """PEP 503's normalized name (what pip, purls and the lock's names agree on)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_path(lock_name: str) -> Path:
    return LOCK_DIR / f"{lock_name}.lock"


def read_pins(lock_text: str) -> dict[str, Pin]:
    """The lock's pins by normalized name."""
    return {
        normalized(entry["name"]): Pin(
            name=normalized(entry["name"]),
            version=entry["version"],
            hashes=tuple(HASH.findall(entry.group(0))),
        )
        for entry in ENTRY.finditer(lock_text)
    }


def with_hashes_replaced(lock_text: str, package: str) -> str:
    """The lock with every hash of `package`'s entry replaced by one no file has."""
    for entry in ENTRY.finditer(lock_text):
        if normalized(entry["name"]) == normalized(package):
            tampered = HASH.sub(f"--hash=sha256:{TAMPERED_HASH}", entry.group(0))
            return lock_text[: entry.start()] + tampered + lock_text[entry.end() :]
    raise ValueError(f"{package} is not pinned in the lock")


def without_hashes(lock_text: str) -> str:
    """The lock with every hash line removed (the pins and comments stay)."""
    return re.sub(r" \\\n(?: {4}--hash=sha256:[0-9a-f]+(?: \\)?\n)+", "\n", lock_text)


@dataclass(frozen=True)
class BrokenLock:
    text: str
    # What pip must print refusing it (a regex): the refusal, then the package it names.
    refusal: str


def broken_lock(lock_text: str, case: str, package: str = TAMPERED_PACKAGE) -> BrokenLock:
    """A copy of the lock broken as `case` (one of BROKEN_LOCK_CASES) says; `package` is the
    one whose hashes "a hash no file has" replaces."""
    pins = read_pins(lock_text)
    if case == "a hash no file has":
        version = re.escape(pins[package].version)
        return BrokenLock(
            with_hashes_replaced(lock_text, package),
            # The package, its pinned version and the URL of the file refused.
            rf"DO NOT MATCH THE HASHES.*\n\s+{package}=={version} from \S+",
        )
    if case == "no hashes at all":
        # pip names the first pin it fetched, with the hash its file has.
        named = "|".join(re.escape(f"{pin.name}=={pin.version}") for pin in pins.values())
        return BrokenLock(
            without_hashes(lock_text),
            rf"Hashes are required in --require-hashes mode.*\n\s+({named}) --hash=sha256:",
        )
    raise ValueError(f"unknown case {case!r}")
