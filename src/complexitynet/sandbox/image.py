"""The sandbox image: its content-addressed name, and how to build it with or without a registry.

The tag is a hash of the Dockerfile, the runner and the protocol, so a changed runner can never
run in a stale image. Online, the Dockerfile starts from python:3.11-slim; offline, from a minimal
Debian made by debootstrap (Debian's package mirror only) and imported with `docker import`. The
debootstrapped root filesystem is cached as a tarball so a rebuild takes seconds.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Literal

from complexitynet.errors import ComplexityNetError

log = logging.getLogger(__name__)

REPO_SANDBOX = Path(__file__).resolve().parents[3] / "sandbox"
PROTOCOL = Path(__file__).resolve().with_name("protocol.py")
IMAGE_REPO = "complexitynet-sandbox"
OFFLINE_BASE = "complexitynet-sandbox-base:bookworm"
ONLINE_BASE = "python:3.11-slim"
ROOTFS_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "complexitynet"


class SandboxImageError(ComplexityNetError):
    """The sandbox image could not be found or built."""


def sandbox_files() -> dict[str, Path]:
    """The files that make the image (and the bwrap sandbox): name in /sandbox -> path here."""
    runner_dir = Path(os.environ.get("COMPLEXITYNET_SANDBOX_DIR", REPO_SANDBOX))
    files = {"Dockerfile": runner_dir / "Dockerfile", "runner.py": runner_dir / "runner.py",
             "protocol.py": PROTOCOL}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise SandboxImageError(f"sandbox files not found: {missing}; run from a ComplexityNet checkout "
                                "or set COMPLEXITYNET_SANDBOX_DIR to its sandbox/ directory")
    return files


def image_name() -> str:
    digest = hashlib.sha256()
    for name, path in sorted(sandbox_files().items()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{IMAGE_REPO}:{digest.hexdigest()[:12]}"


def ensure_image(client, mode: Literal["auto", "online", "offline"] = "auto") -> str:
    """Return the image name, building it first if the engine does not have it."""
    import docker.errors

    name = image_name()
    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    base = _base_image(client, mode)
    log.info("building sandbox image %s from %s", name, base)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for arcname, path in sandbox_files().items():
            tar.add(path, arcname=arcname)
    context.seek(0)
    try:
        client.images.build(fileobj=context, custom_context=True, tag=name, buildargs={"BASE": base},
                            rm=True, forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        raise SandboxImageError(f"building {name} failed: {exc}") from None
    return name


def _base_image(client, mode: str) -> str:
    import docker.errors

    for candidate in ((ONLINE_BASE, OFFLINE_BASE) if mode == "auto" else
                      (ONLINE_BASE,) if mode == "online" else (OFFLINE_BASE,)):
        try:
            client.images.get(candidate)
            return candidate
        except docker.errors.ImageNotFound:
            continue
    if mode in ("auto", "online"):
        try:
            client.images.pull(ONLINE_BASE)
            return ONLINE_BASE
        except docker.errors.APIError as exc:
            if mode == "online":
                raise SandboxImageError(f"cannot pull {ONLINE_BASE}: {exc}") from None
            log.info("cannot pull %s (%s); building the offline base", ONLINE_BASE, exc.explanation)
    _import_offline_base(client)
    return OFFLINE_BASE


def _import_offline_base(client) -> None:
    """debootstrap a minimal Debian with python3 (cached as a tarball) and `docker import` it."""
    tarball = ROOTFS_CACHE / "sandbox-rootfs-bookworm.tar"
    if not tarball.exists():
        if shutil.which("debootstrap") is None:
            raise SandboxImageError("no registry and no debootstrap: install it (apt-get install debootstrap) "
                                    "or make python:3.11-slim available to the Docker engine")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sandbox-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            log.info("debootstrap bookworm (about a minute, Debian's package mirror)")
            proc = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(rootfs)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SandboxImageError(f"debootstrap failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            partial = tarball.with_suffix(".tar.partial")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
    repository, tag = OFFLINE_BASE.split(":")
    client.api.import_image(src=str(tarball), repository=repository, tag=tag)


def build_for(image_build: Literal["auto", "online", "offline"]) -> None:
    """`complexitynet sandbox-image`: build the Docker image if the engine lacks it, and name it."""
    from complexitynet.sandbox.backends import DockerBackend, Limits

    backend = DockerBackend(Limits(), image_build)
    log.info("sandbox image: %s", backend.image)
    backend.close()
