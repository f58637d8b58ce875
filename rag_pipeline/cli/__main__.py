"""`python -m rag_pipeline.cli`: the same as `rag-pipeline`."""

import sys

from rag_pipeline.cli import main

sys.exit(main())
