"""The repository of a git source: opened with dulwich, mirrored from a remote, its refs resolved.

A local repository is read in place. A remote one is fetched, every branch and tag, into a local
bare mirror before each scan; refs the remote no longer has are dropped there. The fingerprint
does not fetch: it asks the remote for the ref's commit in one round trip. A URL's user name and
password never reach an error message.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from dulwich.client import get_transport_and_path
from dulwich.errors import GitProtocolError, NotGitRepository
from dulwich.object_store import peel_sha
from dulwich.objects import Commit
from dulwich.repo import Repo

from rag_pipeline.lib.catalog import ConfigurationError
from rag_pipeline.lib.connectors.git.options import Settings, public_url

_HEX = re.compile(r"^[0-9a-f]{4,40}$")


def open_repository(settings: Settings, where: str) -> Repo:
    path = settings.repository_path
    try:
        return Repo(str(path))
    except (NotGitRepository, FileNotFoundError, NotADirectoryError) as error:
        raise ConfigurationError(f"{where}: {path} is not a git repository") from error


def update_mirror(url: str, mirror_dir: Path, where: str) -> None:
    """Fetch every branch and tag of `url` into the bare repository `mirror_dir` (created if
    missing); refs the remote no longer has are dropped, HEAD follows the remote's."""
    try:
        if (mirror_dir / "HEAD").exists():
            mirror = Repo(str(mirror_dir))
        else:
            mirror_dir.mkdir(parents=True, exist_ok=True)
            mirror = Repo.init_bare(str(mirror_dir))
    except (NotGitRepository, OSError) as error:
        raise ConfigurationError(f"{where}: mirror {mirror_dir} is unusable: {error}") from error
    with mirror:
        client, remote_path = get_transport_and_path(url)
        try:
            result = client.fetch(remote_path, mirror)
        except (GitProtocolError, NotGitRepository) as error:
            # Network failures (OSError) propagate as they are: the run's retry policy applies.
            detail = str(error).replace(url, public_url(url))
            raise ConfigurationError(
                f"{where}: cannot fetch {public_url(url)}: {detail}"
            ) from error
        wanted = {
            name: sha
            for name, sha in result.refs.items()
            if sha is not None and name.startswith((b"refs/heads/", b"refs/tags/"))
        }
        for name, sha in wanted.items():
            mirror.refs[name] = sha
        for name in list(mirror.refs.allkeys()):
            if name.startswith((b"refs/heads/", b"refs/tags/")) and name not in wanted:
                mirror.refs.remove_if_equals(name, None)
        head = result.symrefs.get(b"HEAD")
        if head is not None and head in wanted:
            mirror.refs.set_symbolic_ref(b"HEAD", head)


def resolve(repo: Repo, ref: str | None, where: str) -> tuple[bytes, Commit]:
    """The commit `ref` names (HEAD when None): a branch, a tag (peeled), a full ref name or a
    commit id (abbreviated or not)."""
    name = ref or "HEAD"
    candidates = (
        [name]
        if name.startswith("refs/") or name == "HEAD"
        else [f"refs/heads/{name}", f"refs/tags/{name}", f"refs/remotes/{name}"]
    )
    sha = None
    for candidate in candidates:
        try:
            sha = repo.refs[candidate.encode()]
            break
        except KeyError:
            continue
    store = repo.object_store
    if sha is None and _HEX.match(name.lower()):
        found = sorted(set(store.iter_prefix(name.lower().encode())))
        if len(found) > 1:
            raise ConfigurationError(f"{where}: 'ref' {name!r} is an ambiguous commit id prefix")
        sha = found[0] if found else None
    if sha is None:
        if not any(known.startswith(b"refs/") for known in repo.refs.allkeys()):
            raise ConfigurationError(f"{where}: the repository is empty (no commit yet)")
        if ref is None:
            raise ConfigurationError(
                f"{where}: the repository's HEAD names no commit; set 'ref' to a branch or tag"
            )
        raise ConfigurationError(
            f"{where}: 'ref' {name!r} is neither a branch, a tag nor a commit of the repository"
        )
    try:
        _, commit = peel_sha(store, sha)
    except KeyError as error:
        raise ConfigurationError(f"{where}: {name!r} points to a missing object") from error
    if not isinstance(commit, Commit):
        raise ConfigurationError(
            f"{where}: 'ref' {name!r} names a {commit.type_name.decode()}, not a commit"
        )
    return commit.id, commit


def remote_head(settings: Settings) -> str:
    """The remote's commit for the ref (one ls-remote round trip), or a digest of all its refs."""
    client, remote_path = get_transport_and_path(settings.remote_url or "")
    refs = client.get_refs(remote_path.encode() if isinstance(remote_path, str) else remote_path)
    ref = settings.ref or "HEAD"
    for name in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}"):
        sha = refs.refs.get(name.encode())
        if sha is not None:
            return sha.decode()
    listing = sorted((name, sha or b"") for name, sha in refs.refs.items())
    return hashlib.sha256(repr(listing).encode()).hexdigest()
