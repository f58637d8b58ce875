"""Static int8 quantisation of an OpenVINO embedding export (`RAG_EMBEDDING_BACKEND=openvino-int8`).

NNCF's post-training quantisation calibrates activation ranges on texts run through the model,
offline: the texts are windows of the bundled sample corpus (runbooks, policies, tickets), never
the corpus a deployment indexes nor an evaluation set, so the calibration is the same on every
machine and its digest can key the export. On a CPU with VNNI int8 matrix instructions the
quantised graph runs faster than OpenVINO's bf16 default; its vectors differ from PyTorch's
more (cosine about 0.99 instead of 0.99997), which is why it is a backend of its own with its
own embedding key, measured against PyTorch's nDCG@10 by `benchmarks/bench_embedding.py`.

The recipe (`RECIPE`: NNCF's transformer preset, every layer's feed-forward output projection
left in float) was chosen by fidelity to PyTorch, not by any relevance judgement: on 700
SciFact abstracts and the 809 SciFact queries outside the test split, it kept the most of
PyTorch's top 10 (95.3% against 93.4% for the plain preset; a float first or last layer,
SmoothQuant off or at 0.5, the mixed preset or slow bias correction kept 89.6-94.2%), at 3.4x
PyTorch's throughput against the plain preset's 3.9x. The projection after GELU reads the
widest activation ranges of the network, which 8 bits resolve worst.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

# Words per calibration text: about the 160 word pieces of an average pipeline chunk.
CALIBRATION_WORDS = 120
# NNCF's default statistics subset; more texts change the ranges by less than the noise.
CALIBRATION_TEXTS = 300
_CALIBRATION_SUFFIXES = (".md", ".txt")
# The sample corpus's folders the calibration reads, named so that a source added to the sample
# corpus later does not silently quantise to another model than the one measured.
CALIBRATION_FOLDERS = (
    "acme_engineering",
    "acme_policies",
    "acme_support",
    "globex_support",
    "globex_wiki",
)


def calibration_texts() -> list[str]:
    """At most `CALIBRATION_TEXTS` windows of `CALIBRATION_WORDS` words over the Markdown and
    text files of the sample corpus's `CALIBRATION_FOLDERS`, round-robin over the files in path
    order: every document contributes its first window before any contributes a second, so one
    large ticket dump (most of the corpus's words) cannot crowd out the policies and runbooks."""
    root = Path(__file__).resolve().parents[1] / "sample_corpus"
    per_file: list[list[str]] = []
    paths = sorted(path for folder in CALIBRATION_FOLDERS for path in (root / folder).rglob("*"))
    for path in paths:
        if path.suffix not in _CALIBRATION_SUFFIXES or not path.is_file():
            continue
        words = path.read_text(encoding="utf-8", errors="replace").split()
        per_file.append(
            [
                " ".join(words[start : start + CALIBRATION_WORDS])
                for start in range(0, len(words), CALIBRATION_WORDS)
            ]
        )
    round_robin = [
        windows[depth]
        for depth in range(max(map(len, per_file), default=0))
        for windows in per_file
        if depth < len(windows)
    ]
    return round_robin[:CALIBRATION_TEXTS]


# Names the quantisation below; change it with any change to `quantize_openvino_export`'s
# arguments, so that vectors of another recipe are never taken for this one's.
RECIPE = "nncf-transformer+float-ffn-output"
# The graph nodes kept in float: the feed-forward output projection of every encoder layer
# (`encoder.layer.<n>.output.dense`; the attention's is `attention.output.dense`). NNCF fails if
# no node matches, so an export whose naming changed cannot silently quantise them.
FLOAT_NODES = r".*\.encoder\.layer\.\d+\.output\.dense/.*"


def calibration_digest() -> str:
    """Part of the export key: other calibration texts quantise to another model."""
    digest = hashlib.sha256()
    for text in calibration_texts():
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def quantisation_digest() -> str:
    """Part of the model key: the recipe and the calibration texts, which decide the vectors."""
    return hashlib.sha256(f"{RECIPE}\n{calibration_digest()}".encode()).hexdigest()[:12]


def quantize_openvino_export(export_dir: Path, tokenizer: Any, max_tokens: int) -> None:
    """Replace `export_dir/openvino/openvino_model.{xml,bin}` by its static int8 quantisation.

    `tokenizer` is the export's Hugging Face tokenizer; each calibration text is one unpadded
    batch, so no padding token skews the ranges.
    """
    import nncf
    import openvino as ov

    model_xml = export_dir / "openvino" / "openvino_model.xml"
    model = ov.Core().read_model(str(model_xml))
    input_names = {port.get_any_name() for port in model.inputs}
    batches = [
        {
            name: array
            for name, array in tokenizer(
                [text], truncation=True, max_length=max_tokens, return_tensors="np"
            ).items()
            if name in input_names
        }
        for text in calibration_texts()
    ]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches),
        # Transformer preset: SmoothQuant, and the ops whose int8 error hurts most stay in float.
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches),
        ignored_scope=nncf.IgnoredScope(patterns=[FLOAT_NODES]),
    )
    staged_xml = model_xml.with_name("openvino_model_int8.xml")
    ov.save_model(quantized, str(staged_xml))
    del model, quantized
    os.replace(staged_xml, model_xml)
    os.replace(staged_xml.with_suffix(".bin"), model_xml.with_suffix(".bin"))
