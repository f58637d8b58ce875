"""A fixed split of a golden set's questions into a dev half and a held-out half.

For datasets that publish test judgments only (BEIR SciFact here), settings are chosen on the dev
half and reported on the held-out half. The split depends only on the question id (SHA-256,
even or odd), so it is the same on every machine and run and needs no file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TypeVar

DEV = "dev"
HELD_OUT = "held_out"
SPLITS = (DEV, HELD_OUT)

T = TypeVar("T")


def split_of(question_id: str) -> str:
    digest = hashlib.sha256(question_id.encode("utf-8")).hexdigest()
    return DEV if int(digest, 16) % 2 == 0 else HELD_OUT


def in_split(question_ids: Iterable[str], split: str) -> set[str]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return {question_id for question_id in question_ids if split_of(question_id) == split}
