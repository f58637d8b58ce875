"""Offline PII, secret and prompt-injection detectors (issue 13).

`detect_sensitive` finds PII and credentials as non-overlapping spans (Python str offsets,
end-exclusive; Presidio type names, `SECRET_*` for credentials); `detect_injection` says whether a
text tries to instruct a model. `SAFETY_DETECTOR_VERSION` changes whenever any detector's
behaviour does, so redaction results can be keyed and re-run by it.
"""

from rag_pipeline.lib.safety.findings import (
    ALL_TYPES,
    NER_TYPES,
    SECRET_TYPES,
    STRUCTURED_PII_TYPES,
    STRUCTURED_TYPES,
    Finding,
    InjectionVerdict,
)
from rag_pipeline.lib.safety.injection import INJECTION_THRESHOLD, detect_injection
from rag_pipeline.lib.safety.pii import detect_sensitive
from rag_pipeline.lib.safety.version import SAFETY_DETECTOR_VERSION

__all__ = [
    "ALL_TYPES",
    "INJECTION_THRESHOLD",
    "NER_TYPES",
    "SAFETY_DETECTOR_VERSION",
    "SECRET_TYPES",
    "STRUCTURED_PII_TYPES",
    "STRUCTURED_TYPES",
    "Finding",
    "InjectionVerdict",
    "detect_injection",
    "detect_sensitive",
]
