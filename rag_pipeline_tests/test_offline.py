import os
import socket
import subprocess
import sys

import pytest
import unstructured.nlp.tokenize as tokenize

from rag_pipeline.lib.offline import use_packaged_spacy_model
from rag_pipeline.lib.parsing import parse_document
from rag_pipeline_tests.conftest import NetworkBlockedError


def test_outbound_network_is_blocked_for_the_suite() -> None:
    with pytest.raises(NetworkBlockedError):
        socket.create_connection(("pypi.org", 443), timeout=1)
    with pytest.raises(NetworkBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("93.184.216.34", 80))


def test_the_patched_unstructured_function_still_exists() -> None:
    # The spaCy patch replaces these private names; an unstructured upgrade that renames them
    # must fail here rather than silently download a model at run time.
    assert callable(tokenize._load_spacy_model)
    assert hasattr(tokenize._get_nlp, "cache_clear")
    assert isinstance(tokenize._SPACY_EXCLUDE, list)
    use_packaged_spacy_model()
    assert tokenize._get_nlp() is not None


def test_text_formats_parse_offline() -> None:
    parsed = parse_document(
        b"Subject: VPN down\n\nThe customer reports the VPN has been down since 9am. "
        b"We restarted the gateway.",
        "text/plain",
        filename="ticket.txt",
    )
    assert any("restarted the gateway" in element.text for element in parsed.elements)


def test_ragas_telemetry_is_off_even_when_the_environment_says_otherwise() -> None:
    # ragas only honours the exact value "true"; a user's `1` or `false` must not turn it on.
    for value in ("1", "false"):
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import rag_pipeline; from ragas._analytics import do_not_track; "
                "print(do_not_track())",
            ],
            env={**os.environ, "RAGAS_DO_NOT_TRACK": value},
            capture_output=True,
            text=True,
            check=True,
        )
        assert probe.stdout.strip() == "True", (value, probe.stderr[-500:])
