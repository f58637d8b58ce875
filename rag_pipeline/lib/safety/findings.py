"""The value types every safety detector returns, kept apart so each detector module can import
them without importing the others."""

from __future__ import annotations

from dataclasses import dataclass

# Structured PII: found by patterns with a validation step (checksums, ranges, parsers), cheap
# enough to run on every chunk without loading an NLP model.
STRUCTURED_PII_TYPES: frozenset[str] = frozenset(
    {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"}
)
# Every credential type the secret rules can emit (Presidio has none: `SECRET_` is ours).
SECRET_TYPES: frozenset[str] = frozenset(
    {
        "SECRET_AWS_ACCESS_KEY_ID",
        "SECRET_AWS_SECRET_ACCESS_KEY",
        "SECRET_AWS_KEY",
        "SECRET_GITHUB_TOKEN",
        "SECRET_GITLAB_TOKEN",
        "SECRET_PRIVATE_KEY",
        "SECRET_PASSWORD",
        "SECRET_JWT",
        "SECRET_SLACK_TOKEN",
        "SECRET_SLACK_WEBHOOK",
        "SECRET_STRIPE_KEY",
        "SECRET_OPENAI_KEY",
        "SECRET_ANTHROPIC_KEY",
        "SECRET_GOOGLE_API_KEY",
        "SECRET_GOOGLE_OAUTH",
        "SECRET_AZURE",
        "SECRET_DB_CONNECTION_STRING",
        "SECRET_URL_CREDENTIALS",
        "SECRET_AUTH_HEADER",
        "SECRET_SESSION_COOKIE",
        "SECRET_API_KEY",
        "SECRET_TOKEN",
        "SECRET_KEY",
        "SECRET_GENERIC",
    }
)
STRUCTURED_TYPES: frozenset[str] = STRUCTURED_PII_TYPES | SECRET_TYPES
# Found by the spaCy named-entity model (loaded lazily, once per process). Only names and places:
# the small model's ORG and DATE tags were measured at precision 0.09 and 0.21 on the
# presidio-research rows, and redacting every product name or date would gut documents.
NER_TYPES: frozenset[str] = frozenset({"PERSON", "LOCATION"})
ALL_TYPES: frozenset[str] = STRUCTURED_TYPES | NER_TYPES


@dataclass(frozen=True)
class Finding:
    """One sensitive span: `text[start:end]` (Python str offsets, end-exclusive). Never the value
    itself, so a finding can be logged and audited without leaking what it points at."""

    type: str
    start: int
    end: int
    detector: str
    score: float


@dataclass(frozen=True)
class InjectionVerdict:
    """Whether a text tries to instruct a model, with the rules that fired (for metadata)."""

    injection: bool
    score: float
    reasons: tuple[str, ...]
