"""Retrieval evaluation: BEIR import, golden sets, IR metrics, reference runs and the harness.

Framework-free: `rag-pipeline import-beir` and `benchmarks/eval.py` (`make eval`) call these
modules; nothing here prints (progress goes through callbacks).
"""
