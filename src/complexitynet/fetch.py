"""fetch: put every declared source file under data/sources/, verified against its sha256.

A mirror directory laid out like data/sources/ is tried first ($COMPLEXITYNET_MIRROR, then the
`fetch.mirrors` param), so air-gapped machines and CI work; otherwise the pinned public URL is
downloaded. A file already in place with the right checksum is kept as it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from complexitynet.errors import ChecksumError, DataError
from complexitynet.io import atomic_write, sha256_file
from complexitynet.sources import FILES, SourceFile

if TYPE_CHECKING:
    from complexitynet.config import Params
    from complexitynet.paths import Paths

log = logging.getLogger("complexitynet")

MIRROR_ENV = "COMPLEXITYNET_MIRROR"


@dataclass(frozen=True)
class Fetched:
    name: str
    path: Path
    origin: str  # "cached", "mirror:<dir>" or the URL


def mirror_dirs(params_mirrors: list[str]) -> list[Path]:
    """Mirror directories in the order they are tried: the environment variable first."""
    env = os.environ.get(MIRROR_ENV)
    return [Path(p) for p in ([env] if env else []) + list(params_mirrors)]


def fetch(dest: Path, mirrors: list[Path], timeout_s: float = 60.0,
          files: dict[str, SourceFile] = FILES) -> list[Fetched]:
    """Fetch every file in `files` into `dest`; any checksum mismatch raises ChecksumError."""
    return [_fetch_one(name, src, dest, mirrors, timeout_s) for name, src in sorted(files.items())]


def _fetch_one(name: str, src: SourceFile, dest: Path, mirrors: list[Path], timeout_s: float) -> Fetched:
    target = dest / src.relpath
    if target.exists() and sha256_file(target) == src.sha256:
        return Fetched(name, target, "cached")
    for mirror in mirrors:
        candidate = mirror / src.relpath
        if not candidate.is_file():
            continue
        _verify(candidate, src, f"mirror copy of '{name}'",
                f"replace {candidate} with the published file or remove it from the mirror")
        with open(candidate, "rb") as fin, atomic_write(target, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        return Fetched(name, target, f"mirror:{mirror}")
    _download(src, target, timeout_s, name)
    return Fetched(name, target, src.url)


def _download(src: SourceFile, target: Path, timeout_s: float, name: str) -> None:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(src.url, timeout=timeout_s) as resp, atomic_write(target, "wb") as out:
            while block := resp.read(1 << 20):
                digest.update(block)
                out.write(block)
            if digest.hexdigest() != src.sha256:  # raising here leaves no file behind
                raise ChecksumError(
                    f"download of '{name}' from {src.url}: sha256 is {digest.hexdigest()}, expected "
                    f"{src.sha256}; the upstream file changed or the download was corrupted"
                )
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DataError(
            f"could not download source '{name}' from {src.url} ({exc}); on a machine without "
            f"network, point ${MIRROR_ENV} or params `fetch.mirrors` at a directory holding {src.relpath}"
        ) from None


def _verify(path: Path, src: SourceFile, what: str, fix: str) -> None:
    actual = sha256_file(path)
    if actual != src.sha256:
        raise ChecksumError(f"{what}: sha256 is {actual}, expected {src.sha256} ({path}); {fix}")


# --- the stage's edge: params and paths in, files out (dvc.yaml and the Prefect flow call it) ---

def run(params: Params, paths: Paths) -> None:

    results = fetch(paths.sources, mirror_dirs(params.fetch.mirrors), params.fetch.timeout_s)
    for item in results:
        log.info("%-34s %s", item.name, item.origin)
    log.info("fetch: %d files verified in %s", len(results), paths.sources)
