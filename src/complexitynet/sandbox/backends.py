"""Sandbox backends: long-lived isolated processes that run the runner (sandbox/runner.py).

`docker` runs it in a container (no network, read-only root, non-root user, all capabilities
dropped, no-new-privileges, memory/pids/CPU limits, an init process); `bwrap` runs it in fresh
Linux namespaces (no network, only /usr visible read-only, a private /proc and /tmp) as an
unprivileged uid, for hosts without a Docker engine. Both speak the same protocol, so the
trusted harness does not know which one it talks to.

Errors of the sandbox itself (engine down, container died, a supervisor that stops answering)
raise `SandboxError`; they are retried by the caller and never become a model's verdict.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from complexitynet.errors import ComplexityNetError
from complexitynet.io import pid_alive
from complexitynet.sandbox import protocol as P
from complexitynet.sandbox.image import ensure_image, sandbox_files

log = logging.getLogger(__name__)
GRACE_S = 5.0  # how much longer than a request's own timeout the harness waits for the supervisor
# A fixed hash seed inside every sandbox: set iteration order (and so some answers) must not depend on luck.
HASH_SEED = 0


class SandboxError(ComplexityNetError):
    """The sandbox failed (not the code under test): retry, or stop the stage if it persists."""


@dataclass(frozen=True)
class Limits:
    """Per-sample limits, applied to the solution process inside the sandbox."""

    memory_mb: int = 512  # address space of the solution process
    cpu_s: int = 20  # CPU seconds over the whole sample
    file_mb: int = 16  # largest file it may write
    nproc: int = 32  # processes and threads of the sandbox user
    nofile: int = 64  # open file descriptors
    tmp_mb: int = 64  # size of the writable scratch directory (tmpfs)

    def runner(self) -> dict[str, int]:
        return {"memory_mb": self.memory_mb, "cpu_s": self.cpu_s, "file_mb": self.file_mb,
                "nproc": self.nproc, "nofile": self.nofile}


class Session(ABC):
    """One long-lived sandbox speaking the runner protocol over a byte stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.hello: dict[str, Any] = {}

    def _handshake(self, timeout_s: float) -> None:
        """Wait for the runner's greeting; a sandbox that does not greet is closed."""
        try:
            self.hello = self._read_message(time.monotonic() + timeout_s)
            if not self.hello.get("ready"):
                raise SandboxError(f"sandbox did not start: {self.hello}")
            if self.hello.get("hash_seed") != str(HASH_SEED):
                raise SandboxError(f"the sandbox runs with PYTHONHASHSEED={self.hello.get('hash_seed')!r}, "
                                   f"not {HASH_SEED}; rebuild it (make sandbox)")
        except SandboxError:
            self.close()
            raise

    def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send a request; the runner answers within its own `timeout_s`, we wait a grace longer."""
        try:
            self._send(P.pack(dict(message, timeout_s=timeout_s)))
        except OSError as exc:
            raise SandboxError(f"sandbox stopped accepting requests: {exc}") from None
        return self._read_message(time.monotonic() + timeout_s + GRACE_S)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        try:
            size = P.message_size(self._read_exact(P.HEADER_SIZE, deadline))
            return P.unpack(self._read_exact(size, deadline))
        except P.ProtocolError as exc:
            raise SandboxError(f"the sandbox supervisor broke the protocol: {exc}") from None

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError("sandbox stopped answering")
            chunk = self._recv(remaining)
            if not chunk:
                raise SandboxError(f"sandbox exited ({self.describe_exit()})")
            self._buffer += chunk
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    @abstractmethod
    def _send(self, data: bytes) -> None: ...

    @abstractmethod
    def _recv(self, timeout_s: float) -> bytes:
        """Some bytes from the runner's stdout, b'' at EOF; raise SandboxError on timeout."""

    @abstractmethod
    def describe_exit(self) -> str: ...

    def outside_fault(self) -> str | None:
        """Why this sandbox failed, when something outside it did it (killed, paused or removed by the
        host or the engine, which no sample can do); None when the sample may be the cause."""
        return None

    @abstractmethod
    def close(self) -> None: ...


class BwrapSession(Session):
    """The runner under bubblewrap, as an unprivileged uid, with every namespace unshared."""

    def __init__(self, uid: int, limits: Limits, start_timeout_s: float = 20.0) -> None:
        super().__init__()
        if shutil.which("bwrap") is None:
            raise SandboxError("bwrap not found: install bubblewrap (apt-get install bubblewrap)")
        self._dir = tempfile.mkdtemp(prefix="complexitynet-runner-")
        os.chmod(self._dir, 0o755)
        for name in ("runner.py", "protocol.py"):
            dst = Path(self._dir) / name
            shutil.copyfile(sandbox_files()[name], dst)
            os.chmod(dst, 0o644)
        python = "/usr/bin/python3"  # a world-readable interpreter under /usr, the only tree mounted
        cmd = [
            "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--as-pid-1",  # the runner is pid 1: the kernel drops signals the sample sends it (SIGSTOP, SIGKILL)
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev",
            "--size", str(limits.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp",
            "--size", str(limits.tmp_mb * 1024 * 1024), "--tmpfs", "/dev/shm",  # capped, wiped per sample
            "--remount-ro", "/dev",  # the device tmpfs itself takes no files
            "--ro-bind", self._dir, "/sandbox", "--remount-ro", "/", "--setenv", "PATH", "/usr/bin",
            "--setenv", "PYTHONHASHSEED", str(HASH_SEED), "--chdir", "/tmp",
            python, "-s", "-P", "/sandbox/runner.py",  # not -I, which ignores PYTHONHASHSEED
        ]
        if os.geteuid() == 0:  # root is exempt from RLIMIT_NPROC: run as a dedicated unprivileged uid
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] + cmd
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env={}, close_fds=True)
        except OSError as exc:
            self._cleanup_dir()
            raise SandboxError(f"cannot start bwrap: {exc}") from None
        self._handshake(start_timeout_s)

    def _send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _recv(self, timeout_s: float) -> bytes:
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            raise SandboxError("sandbox stopped answering")
        return os.read(fd, 1 << 16)

    def describe_exit(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "still running"
        err = self.proc.stderr.read().decode(errors="replace")[-500:] if self.proc.stderr else ""
        return f"exit code {code}; {err.strip()}"

    def outside_fault(self) -> str | None:
        # bwrap runs outside the sample's pid namespace, and the runner is the namespace's pid 1: the
        # sample can signal neither, so a signal death or a stop came from the host.
        code = self.proc.poll()
        if code is not None:
            return f"bwrap was killed by signal {-code}" if code < 0 else \
                "the supervisor was killed by SIGKILL" if code == 137 else None
        try:
            state = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None
        return "bwrap was stopped" if state in ("T", "t") else None

    def close(self) -> None:
        # EOF on stdin lets the supervisor exit and bwrap reap its namespace; killing bwrap outright
        # would orphan its inner init process.
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


class DockerSession(Session):
    """The runner in a long-lived container, attached to its stdin/stdout through the Engine API."""

    LABEL = "complexitynet.sandbox"

    def __init__(self, client, image: str, uid: int, limits: Limits, start_timeout_s: float = 30.0) -> None:
        import docker.errors

        super().__init__()
        self._frame = bytearray()
        self._client = client
        try:
            self.container = client.containers.create(
                image, stdin_open=True, tty=False, network_mode="none", read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.tmp_mb}m,mode=1777"},
                user=f"{uid}:{uid}", cap_drop=["ALL"], security_opt=["no-new-privileges"],
                mem_limit=f"{limits.memory_mb + 256}m", memswap_limit=f"{limits.memory_mb + 256}m",
                # No docker-init: the runner is pid 1 and not dumpable, so no process of the sample's
                # uid can open /proc/1/fd and write into the protocol stream (docker-init's could).
                pids_limit=limits.nproc + 16, nano_cpus=1_000_000_000, init=False,
                environment={"PYTHONHASHSEED": str(HASH_SEED)}, labels={self.LABEL: str(os.getpid())}, ipc_mode="none",
            )
            self._sock = client.api.attach_socket(self.container.id, params={
                "stdin": 1, "stdout": 1, "stderr": 0, "stream": 1})
            self._raw: socket.socket = self._sock._sock
            self.container.start()
        except docker.errors.DockerException as exc:
            self.close()
            raise SandboxError(f"cannot start a sandbox container from {image}: {exc}") from None
        self._handshake(start_timeout_s)

    def _send(self, data: bytes) -> None:
        self._raw.sendall(data)

    def _recv(self, timeout_s: float) -> bytes:
        """Demultiplex the attach stream: 8-byte frame headers (stream id, size) before each payload."""
        deadline = time.monotonic() + timeout_s
        while True:
            if len(self._frame) >= 8:
                size = struct.unpack(">I", self._frame[4:8])[0]
                if len(self._frame) >= 8 + size:
                    kind, payload = self._frame[0], bytes(self._frame[8:8 + size])
                    del self._frame[:8 + size]
                    if kind == 1 and payload:  # stdout
                        return payload
                    continue
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._raw], [], [], max(remaining, 0))
            if not ready:
                raise SandboxError("sandbox stopped answering")
            chunk = self._raw.recv(1 << 16)
            if not chunk:
                return b""
            self._frame += chunk

    def describe_exit(self) -> str:
        try:
            self.container.reload()
            state = self.container.attrs.get("State", {})
            logs = self.container.logs(stdout=False, stderr=True, tail=5).decode(errors="replace").strip()
            return f"container {state.get('Status')}, exit code {state.get('ExitCode')}, " \
                   f"OOMKilled={state.get('OOMKilled')}; {logs}"
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            return f"container state unknown ({exc})"

    def outside_fault(self) -> str | None:
        # The runner is the container's pid 1, which the kernel shields from the sample's signals: a
        # SIGKILL (exit code 137) without the memory cgroup's OOM kill, a pause or a removal came from
        # outside (docker kill/pause/rm, an engine restart).
        import docker.errors

        try:
            self.container.reload()
        except docker.errors.NotFound:
            return "the container was removed"
        except Exception as exc:  # noqa: BLE001 - an engine that does not answer is not the sample's doing
            return f"the Docker engine did not answer ({type(exc).__name__})"
        state = self.container.attrs.get("State", {})
        if state.get("Paused") or state.get("Status") == "paused":
            return "the container was paused"
        if state.get("Status") in ("exited", "dead") and state.get("ExitCode") == 137 and not state.get("OOMKilled"):
            return "the container was killed (exit code 137)"
        return None

    def close(self) -> None:
        import docker.errors

        sock = getattr(self, "_sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        container = getattr(self, "container", None)
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:
                pass


class Backend(ABC):
    """Makes sessions; one per worker slot."""

    name: str

    @property
    @abstractmethod
    def sandbox(self) -> str:
        """What runs the code, for the verdict's record: the backend and its image or interpreter."""

    @abstractmethod
    def open(self, slot: int) -> Session: ...

    def close(self) -> None:
        """Release backend-wide resources (sessions are closed by their owners)."""


class BwrapBackend(Backend):
    name = "bwrap"

    def __init__(self, limits: Limits, uid_base: int = 22000) -> None:
        self.limits = limits
        self.uid_base = uid_base + (os.getpid() % 256) * 64  # concurrent runs do not share uids

    @property
    def sandbox(self) -> str:
        return "bwrap /usr/bin/python3"

    def open(self, slot: int) -> Session:
        return BwrapSession(self.uid_base + slot, self.limits)


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, limits: Limits, image_build: str = "auto", uid_base: int = 40000) -> None:
        import docker

        try:
            self.client = docker.from_env(timeout=60)
            self.client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the engine
            raise SandboxError(f"Docker engine not reachable ({exc}); start dockerd, or use backend 'bwrap'") \
                from None
        self.limits = limits
        self.image = ensure_image(self.client, image_build)
        self.uid_base = uid_base + (os.getpid() % 256) * 64
        self.removed_leftovers = remove_leftover_containers(self.client)

    @property
    def sandbox(self) -> str:
        return f"docker {self.image}"

    def open(self, slot: int) -> Session:
        return DockerSession(self.client, self.image, self.uid_base + slot, self.limits)

    def close(self) -> None:
        self.client.close()


def remove_leftover_containers(client) -> int:
    """Remove sandbox containers whose run is gone (a SIGKILLed execute cannot clean up after itself);
    those of runs still alive on this host are left alone. Returns how many were removed."""
    import docker.errors

    removed = 0
    for container in client.containers.list(all=True, filters={"label": DockerSession.LABEL}):
        owner = container.labels.get(DockerSession.LABEL, "")
        if owner.isdigit() and pid_alive(int(owner)):
            continue
        try:
            container.remove(force=True)
            removed += 1
        except docker.errors.DockerException:
            pass
    if removed:
        log.info("removed %d sandbox container(s) left by runs that were killed", removed)
    return removed


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - "is there an engine" is a yes/no question
        return False


BACKENDS = ("auto", "docker", "bwrap")


def resolve_backend(name: str) -> str:
    """`auto` means docker when an engine answers, else bwrap."""
    if name not in BACKENDS:
        raise SandboxError(f"unknown sandbox backend '{name}'; available: {list(BACKENDS)}")
    if name != "auto":
        return name
    if docker_available():
        return "docker"
    if shutil.which("bwrap") is None:
        raise SandboxError("no sandbox available: no Docker engine answers and bwrap is not installed "
                           "(see docs/sandbox.md)")
    return "bwrap"


def make_backend(name: str, limits: Limits, image_build: str = "auto") -> Backend:
    if resolve_backend(name) == "docker":
        return DockerBackend(limits, image_build)
    return BwrapBackend(limits)
