"""The git connector: the files of one commit of a git repository, read with dulwich (no git).

The source names a repository (`path`: a local working or bare repository; or `url`: a
`file://` URL read in place, or a remote http(s)/ssh/git URL fetched into a local bare mirror
first) and a `ref` (branch, tag or commit; default the repository's HEAD). Each scan resolves the
ref to a commit and lists that commit's tree, reading tree objects only.

One concern per module:

- `options`: the source's options validated (where the repository is, `ref`, `include` /
  `exclude` globs, `acl_rules`), and the repository URL as lineage and messages may show it;
- `repository`: opening the repository, updating a remote's local mirror, resolving the ref to a
  commit, and the remote's head for the fingerprint;
- `scan`: why documents went away since the last indexed commit (renames, deletions), and the
  documents of the scanned commit's tree;
- `connector`: `GitConnector`, the `connector: git` entry that puts them together.
"""

from __future__ import annotations

from rag_pipeline.lib.connectors.git.connector import GitConnector
from rag_pipeline.lib.connectors.git.options import _glob_regex
from rag_pipeline.lib.connectors.git.repository import update_mirror

# `_glob_regex` is re-exported for its unit tests, which import it from the package.
__all__ = ["GitConnector", "_glob_regex", "update_mirror"]
