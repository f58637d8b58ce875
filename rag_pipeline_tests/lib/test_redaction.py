"""The redaction step's pure logic: policies, finding placement, applying actions, offsets."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_pipeline.lib.catalog import ConfigurationError, load_sources
from rag_pipeline.lib.parsing import ParsedElement
from rag_pipeline.lib.redaction import (
    TITLE_ELEMENT,
    ElementFinding,
    RedactionPolicy,
    RedactionPolicyError,
    apply_policy,
    decide_injection,
    join_elements,
    redact_text,
    redaction_key,
    scan_document,
    sensitive_detector,
    split_findings,
)
from rag_pipeline.lib.safety import Finding

AWS_KEY_ID = "AKIAZ3MSJV4WGHXQ7R2T"
AWS_SECRET = "q8Jf3LkP0zXvN2mWb7Ty5RcA1sDgH4uE6iKoL9pQ"
CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.com"


def element(index: int, text: str, kind: str = "NarrativeText") -> ParsedElement:
    return ParsedElement(index, kind, text, None, None)


def test_policy_defaults_are_the_safe_ones() -> None:
    policy = RedactionPolicy.from_config(None, "here")
    assert (policy.pii, policy.injection, policy.pii_scope) == ("redact", "tag", "structured")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"pii": "hide"}, "redaction.pii must be one of ['redact', 'mask', 'flag']"),
        ({"injection": "drop"}, "redaction.injection must be one of ['tag', 'quarantine']"),
        ({"pii_scope": "names"}, "redaction.pii_scope must be one of"),
        ({"pii": "redact", "secrets": "flag"}, "unknown key(s) ['secrets']"),
        ("redact", "'redaction' must be a mapping"),
    ],
)
def test_bad_policies_are_refused_with_the_field_named(value: object, message: str) -> None:
    with pytest.raises(RedactionPolicyError, match=r"^src: ") as raised:
        RedactionPolicy.from_config(value, "src")
    assert message in str(raised.value)


def test_sources_file_policy_is_parsed_and_a_bad_one_fails_the_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    good = tmp_path / "sources.yaml"
    good.write_text(
        "sources:\n"
        "  - {name: a, path: docs, tenants: [t], redaction: {pii: mask, injection: quarantine}}\n"
        "  - {name: b, path: docs, tenants: [t]}\n"
    )
    a, b = load_sources(good)
    assert (a.redaction.pii, a.redaction.injection) == ("mask", "quarantine")
    assert b.redaction == RedactionPolicy()
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {name: a, path: docs, tenants: [t], redaction: {pii: off}}\n")
    with pytest.raises(ConfigurationError, match=r"sources\[0\] \(a\).*redaction.pii"):
        load_sources(bad)


def test_redaction_key_changes_with_policy_and_detector() -> None:
    keys = {
        redaction_key("d1", RedactionPolicy()),
        redaction_key("d2", RedactionPolicy()),
        redaction_key("d1", RedactionPolicy(pii="mask")),
        redaction_key("d1", RedactionPolicy(injection="quarantine")),
        redaction_key("d1", RedactionPolicy(pii_scope="all")),
    }
    assert len(keys) == 5


def test_findings_are_placed_on_elements_and_split_across_them() -> None:
    elements = [element(0, "abc"), element(1, "defgh")]
    text, starts = join_elements(elements)
    assert text == "abc\n\ndefgh" and starts == [0, 5]
    findings = [Finding("X", 1, 7, "t", 0.5), Finding("Y", 6, 8, "t", 0.9)]
    placed = split_findings(findings, elements, starts)
    assert [(f.element, f.start, f.end, f.type) for f in placed] == [
        (0, 1, 3, "X"),
        (1, 0, 2, "X"),
        (1, 1, 3, "Y"),
    ]


def test_redact_mask_flag_and_offsets_of_the_audit_records() -> None:
    body = f"Mail {EMAIL} or pay with {CARD}. Key {AWS_KEY_ID} end"
    elements = [element(0, "Intro"), element(1, body)]
    findings = [
        ElementFinding(
            1, body.index(EMAIL), body.index(EMAIL) + len(EMAIL), "EMAIL_ADDRESS", "r", 1
        ),
        ElementFinding(1, body.index(CARD), body.index(CARD) + len(CARD), "CREDIT_CARD", "r", 1),
        ElementFinding(
            1,
            body.index(AWS_KEY_ID),
            body.index(AWS_KEY_ID) + len(AWS_KEY_ID),
            "SECRET_AWS_ACCESS_KEY_ID",
            "s",
            1,
        ),
    ]
    redacted = apply_policy("Title", elements, findings, RedactionPolicy(pii="redact"))
    text = redacted.elements[1].text
    assert text == (
        "Mail [EMAIL_ADDRESS] or pay with [CREDIT_CARD]. Key [SECRET_AWS_ACCESS_KEY_ID] end"
    )
    assert redacted.elements[0] == elements[0]
    for item in redacted.applied:
        assert body[item.start : item.end] not in text
        assert text[item.new_start : item.new_end] == f"[{item.type}]"
    assert redacted.counts() == {
        "CREDIT_CARD:redacted": 1,
        "EMAIL_ADDRESS:redacted": 1,
        "SECRET_AWS_ACCESS_KEY_ID:redacted": 1,
    }

    masked = apply_policy("Title", elements, findings, RedactionPolicy(pii="mask"))
    masked_text = masked.elements[1].text
    assert len(masked_text) == len(body) - len(AWS_KEY_ID) + len("[SECRET_AWS_ACCESS_KEY_ID]")
    assert EMAIL not in masked_text and CARD not in masked_text and AWS_KEY_ID not in masked_text
    assert "Mail ******************** or pay with **** **** **** ****." in masked_text
    assert [a.action for a in masked.applied] == ["masked", "masked", "redacted"]

    flagged = apply_policy("Title", elements, findings, RedactionPolicy(pii="flag"))
    flagged_text = flagged.elements[1].text
    # Flag keeps contact details verbatim, but never a secret nor a card number.
    assert EMAIL in flagged_text and CARD not in flagged_text and AWS_KEY_ID not in flagged_text
    assert "pay with [CREDIT_CARD]." in flagged_text
    assert [a.action for a in flagged.applied] == ["flagged", "redacted", "redacted"]


def test_overlapping_findings_merge_and_a_secret_wins() -> None:
    text = "token=abcdef123456 rest"
    findings = [
        ElementFinding(0, 6, 18, "PHONE_NUMBER", "r", 0.4),
        ElementFinding(0, 0, 18, "SECRET_TOKEN", "s", 0.9),
    ]
    redacted = apply_policy("", [element(0, text)], findings, RedactionPolicy(pii="flag"))
    assert redacted.elements[0].text == "[SECRET_TOKEN] rest"
    assert [(a.start, a.end, a.type, a.action) for a in redacted.applied] == [
        (0, 18, "SECRET_TOKEN", "redacted")
    ]


def test_findings_that_do_not_fit_the_text_are_an_error() -> None:
    with pytest.raises(ValueError, match="beyond element 0"):
        apply_policy(
            "", [element(0, "short")], [ElementFinding(0, 2, 40, "X", "r", 1)], RedactionPolicy()
        )
    with pytest.raises(ValueError, match="finding for element 3"):
        apply_policy(
            "", [element(0, "x")], [ElementFinding(3, 0, 1, "X", "r", 1)], RedactionPolicy()
        )


def test_scan_with_the_real_detectors_covers_title_and_context_across_lines() -> None:
    elements = [
        element(0, "Credentials", "Title"),
        element(1, f"aws_access_key_id = {AWS_KEY_ID}"),
        element(2, f"aws_secret_access_key = {AWS_SECRET}"),
        element(3, f"Card {CARD}, mail {EMAIL}."),
    ]
    findings = scan_document(f"Contact {EMAIL}", elements, sensitive_detector("structured"))
    types = {(f.element, f.type) for f in findings}
    assert (TITLE_ELEMENT, "EMAIL_ADDRESS") in types
    assert {(1, "SECRET_AWS_ACCESS_KEY_ID"), (3, "CREDIT_CARD"), (3, "EMAIL_ADDRESS")} <= types
    assert any(f.element == 2 and f.type.startswith("SECRET_") for f in findings)
    redacted = apply_policy(f"Contact {EMAIL}", elements, findings, RedactionPolicy())
    everything = redacted.title + " ".join(e.text for e in redacted.elements)
    for value in (AWS_KEY_ID, AWS_SECRET, CARD, EMAIL):
        assert value not in everything
    # Findings serialize without their values.
    assert all(
        set(f.to_json()) == {"element", "start", "end", "type", "detector", "score"}
        for f in findings
    )


def test_redact_text_for_previews() -> None:
    assert redact_text(f"write to {EMAIL} with {AWS_KEY_ID}") == (
        "write to [EMAIL_ADDRESS] with [SECRET_AWS_ACCESS_KEY_ID]"
    )
    assert redact_text("") == ""


def test_documented_example_credentials_are_redacted_though_a_scan_skips_them() -> None:
    # AWS's documented example pair: the first thing anyone pastes to try a redactor.
    text = (
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
    )
    from rag_pipeline.lib.safety import detect_sensitive

    assert detect_sensitive(text) == []  # a scan reports only values that could be live
    redacted = redact_text(text)
    assert "AKIAIOSFODNN7EXAMPLE" not in redacted and "bPxRfiCYEXAMPLEKEY" not in redacted
    assert "[SECRET_AWS_ACCESS_KEY_ID]" in redacted
    assert "[SECRET_AWS_SECRET_ACCESS_KEY]" in redacted
    types = {f.type for f in sensitive_detector("structured")(text)}
    assert types == {"SECRET_AWS_ACCESS_KEY_ID", "SECRET_AWS_SECRET_ACCESS_KEY"}


def test_injection_decisions_follow_the_policy() -> None:
    tag, quarantine = RedactionPolicy(), RedactionPolicy(injection="quarantine")
    assert decide_injection(False, 0.1, (), quarantine).action == "clean"
    assert decide_injection(True, 0.9, ("override",), tag).action == "tagged"
    assert decide_injection(True, 0.9, ("override",), quarantine).action == "quarantined"


def test_scope_all_adds_names_and_places_structured_does_not() -> None:
    text = "Please contact Maria Gonzalez in Barcelona about it, mail maria@example.org."
    elements = [element(0, text)]
    structured = scan_document("", elements, sensitive_detector("structured"))
    assert {f.type for f in structured} == {"EMAIL_ADDRESS"}
    everything = scan_document("", elements, sensitive_detector("all"))
    assert {"PERSON", "LOCATION", "EMAIL_ADDRESS"} <= {f.type for f in everything}
    redacted = apply_policy("", elements, everything, RedactionPolicy(pii_scope="all"))
    assert "Maria Gonzalez" not in redacted.elements[0].text
    assert "[PERSON]" in redacted.elements[0].text
