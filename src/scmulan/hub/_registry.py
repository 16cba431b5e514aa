"""Registry of pretrained models: where their files live, their SHA-256, and a pooch-backed download cache."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "SCMULAN_CACHE"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a pretrained model.

    ``sha256=None`` means the publisher gives no hash: the hash of the first successful download is recorded in
    the cache and every later use is checked against it (a corrupted or replaced file is then rejected).
    """

    url: str
    fname: str
    sha256: str | None = None


PRETRAINED: dict[str, dict[str, RemoteFile]] = {
    # The original scMulan release (Bian et al., RECOMB 2024): checkpoint on Tsinghua cloud, vocabulary on GitHub.
    "scmulan-v1": {
        "checkpoint": RemoteFile("https://cloud.tsinghua.edu.cn/f/2250c5df51034b2e9a85/?dl=1", "ckpt_scMulan.pt"),
        "meta_info": RemoteFile(
            "https://raw.githubusercontent.com/SuperBianC/scMulan/main/scMulan/utils/meta_info.pt",
            "meta_info.pt",
            "3b550337cd48873c963cad8b656baa84a00baad1058e6105b71aa728d657dde2",
        ),
    },
}


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Download cache: ``path``, else ``$SCMULAN_CACHE``, else pooch's per-user cache folder for scmulan."""
    import pooch

    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(pooch.os_cache("scmulan"))


def _file_sha256(path: Path) -> str:
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def _check(path: Path, expected: str | None, what: str) -> None:
    if expected is not None and _file_sha256(path) != expected:
        msg = (
            f"{path} does not have the published SHA-256 of the {what} ({expected}); the file is corrupted or not "
            "the released one. Delete it and download it again."
        )
        raise ValueError(msg)


def _read_recorded(path: Path) -> dict[str, str]:
    """The SHA-256 recorded at the first download of files published without one (``{}`` before any)."""
    from scmulan._files import DamagedFileError, read_json

    if not path.exists():
        return {}
    fix = "Delete it together with the files it lists; they are downloaded and recorded again."
    recorded = read_json(path, what="the download cache's record of SHA-256 hashes", fix=fix)
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        msg = f"{path} is not a record of SHA-256 hashes (a mapping of file names to hashes). {fix}"
        raise DamagedFileError(msg)
    return recorded


def fetch_pretrained(
    name: str,
    *,
    path: str | os.PathLike | None = None,
    cache_dir_: str | os.PathLike | None = None,
    progressbar: bool = True,
) -> dict[str, Path]:
    """Local paths of a pretrained model's files, downloading (and verifying) what is missing.

    Parameters
    ----------
    name
        A key of :data:`PRETRAINED`.
    path
        Files you downloaded yourself (offline machines): a directory holding them under their usual names, or the
        checkpoint file itself (the other files are then looked for next to it, and downloaded if absent).
    cache_dir_
        Download cache (default: ``$SCMULAN_CACHE`` or pooch's cache folder).
    progressbar
        Show a download progress bar.
    """
    import pooch

    if name not in PRETRAINED:
        msg = f"Unknown pretrained model {name!r}; available: {sorted(PRETRAINED)}."
        raise ValueError(msg)
    files = PRETRAINED[name]
    folder = cache_dir(cache_dir_) / name
    recorded_path = folder / "sha256.json"
    recorded = _read_recorded(recorded_path)
    local: dict[str, Path] = {}
    if path is not None:
        given = Path(path).expanduser()  # "~/Downloads/scmulan/" as in the documented example
        if not given.exists():
            msg = f"`path={os.fspath(path)!r}` does not exist."
            raise ValueError(msg)
        for role, remote in files.items():
            if given.is_dir():
                candidate = given / remote.fname
            else:
                candidate = given if role == "checkpoint" else given.parent / remote.fname
            if candidate.exists():
                _check(candidate, remote.sha256, f"{name} {role}")
                local[role] = candidate
            elif role == "checkpoint":
                msg = f"No {name} checkpoint at {candidate} (expected the file {remote.fname!r} or its path)."
                raise ValueError(msg)
    for role, remote in files.items():
        if role in local:
            continue
        known = remote.sha256 or recorded.get(remote.fname)
        try:
            file = pooch.retrieve(
                remote.url,
                known_hash=f"sha256:{known}" if known else None,
                fname=remote.fname,
                path=folder,
                progressbar=progressbar,
            )
        except ValueError as e:  # pooch's hash mismatch
            msg = f"The downloaded {name} {role} failed its SHA-256 check and was rejected: {e}"
            raise ValueError(msg) from e
        except Exception as e:  # no network, server error
            msg = (
                f"Could not download the {name} {role} from {remote.url} ({type(e).__name__}: {e}). On a machine "
                f"without internet, download it elsewhere and pass `path=` (or put it in {folder})."
            )
            raise OSError(msg) from e
        local[role] = Path(file)
        if known is None:
            recorded[remote.fname] = _file_sha256(local[role])
            folder.mkdir(parents=True, exist_ok=True)
            recorded_path.write_text(json.dumps(recorded, indent=1))
            logger.info("recorded SHA-256 %s of %s", recorded[remote.fname], local[role])
    return local
