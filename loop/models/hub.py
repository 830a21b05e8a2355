"""A model named by its Hugging Face hub id, `org/name` or `org/name@revision`, resolved to a local
snapshot directory: the local cache first, then a download (with progress) unless offline
(`HF_HUB_OFFLINE=1`). Runs and bundles record the id and the resolved commit, never a cache path.
Every failure is a HubModelError whose message says what to do."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# org/name with the hub's characters, optionally @revision (a branch, tag or commit).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$")


class HubModelError(FileNotFoundError):
    """A hub id that cannot be resolved; the message says why and what to do."""


@dataclass(frozen=True)
class HubModel:
    id: str          # org/name
    revision: str    # the commit the snapshot is (what a run records)
    path: str        # the local snapshot directory (never recorded)
    how: str         # "cache" or "download"


def is_hub_id(ref: str) -> bool:
    """`org/name[@rev]` that is not an existing local path (a local directory wins)."""
    if ref.startswith(("builtin:", "/", ".", "~")) or Path(ref).expanduser().exists():
        return False
    return bool(_HUB_ID.match(ref))


def split_ref(ref: str) -> tuple[str, str | None]:
    repo, _, rev = ref.partition("@")
    return repo, rev or None


def _cached_ids(cache: str) -> list[str]:
    try:
        from huggingface_hub import scan_cache_dir

        return sorted(r.repo_id for r in scan_cache_dir(cache).repos if r.repo_type == "model")
    except Exception:  # noqa: BLE001 - no cache directory yet, or one we cannot read: nothing to suggest
        return []


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_model(ref: str, why: str = "model.path") -> HubModel:
    """The snapshot of `ref` (see the module docstring); cached per process once found."""
    from huggingface_hub import constants

    return _resolve(ref, why, _offline(), constants.HF_HUB_CACHE)


@lru_cache(maxsize=16)
def _resolve(ref: str, why: str, offline: bool, cache: str) -> HubModel:
    import httpx
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, rev = split_ref(ref)
    if not _HUB_ID.match(ref):
        raise HubModelError(f"{why}: {ref!r} is neither a local directory nor a hub id (org/name or "
                            f"org/name@revision)")
    try:
        path, how = snapshot_download(repo, revision=rev, cache_dir=cache, local_files_only=True), "cache"
    except (LocalEntryNotFoundError, FileNotFoundError):
        if offline:
            cached = _cached_ids(cache)
            near = f" The cache holds: {', '.join(cached[:8])}." if cached else " The cache holds no model."
            get = f"hf download {repo}" + (f" --revision {rev}" if rev else "")
            raise HubModelError(
                f"{why}: {ref} is not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1 forbids a "
                f"download.{near} Download it where there is a network (`{get}`), unset HF_HUB_OFFLINE, or give a "
                "local model directory") from None
        try:
            # a download shows huggingface_hub's progress bars on stderr
            path, how = snapshot_download(repo, revision=rev, cache_dir=cache), "download"
        except GatedRepoError:
            raise HubModelError(f"{why}: {repo} is gated on the hub; accept its terms on huggingface.co and log "
                                f"in (`hf auth login` or HF_TOKEN)") from None
        except RepositoryNotFoundError:
            raise HubModelError(f"{why}: {repo} is not on the hub, or is private: check the spelling (org/name), "
                                f"or log in with an account that can read it (`hf auth login` or HF_TOKEN)") from None
        except RevisionNotFoundError:
            raise HubModelError(f"{why}: {repo} has no revision {rev!r}; give a branch, tag or commit it has") from None
        except (HfHubHTTPError, LocalEntryNotFoundError, httpx.HTTPError, OSError, ValueError) as e:
            # LocalEntryNotFoundError here: huggingface_hub could not reach the hub and has no snapshot
            raise HubModelError(f"{why}: could not download {ref} ({type(e).__name__}: {str(e)[:200]}); check the "
                                f"network, or download it elsewhere into the cache and set HF_HUB_OFFLINE=1") from None
    return HubModel(id=repo, revision=Path(path).name, path=str(path), how=how)
