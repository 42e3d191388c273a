"""JSONL reading with validation, and atomic, deterministic writing.

Every output file is written to a temporary file beside it and renamed into place, so a killed
process never leaves a half-written file. Records are sorted by their key, and serialised with a
fixed layout, so the order in which parallel work finishes never changes a byte.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pydantic

from complexitynet.errors import DataError

T = TypeVar("T", bound=pydantic.BaseModel)
Item = TypeVar("Item")
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import: mkstemp's 0600 is replaced by the usual 0666 & ~umask


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def iter_json_lines(path: Path, opener: Callable[..., IO[str]] = open) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for every non-blank line; a bad line raises naming file and line."""
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                    "fix or remove that line, or fetch the file again"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_jsonl(path: Path, model: type[T]) -> list[T]:
    """Read and validate every record of a JSONL file written by this project."""
    if not path.exists():
        raise DataError(f"{path}: file not found; run the stage that writes it first (see dvc.yaml)")
    records = []
    for lineno, obj in iter_json_lines(path):
        try:
            records.append(model.model_validate(obj))
        except pydantic.ValidationError as exc:
            raise DataError(f"{path}:{lineno}: invalid {model.__name__} record: {_first_error(exc)}") from None
    return records


def _first_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(record)"
    return f"field '{where}': {err['msg']}"


def dumps(record: pydantic.BaseModel | dict[str, Any]) -> str:
    """One JSON line with a fixed layout (field order of the schema, no ASCII escaping)."""
    obj = record.model_dump(mode="json") if isinstance(record, pydantic.BaseModel) else record
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`, else remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A directory to fill, made beside `path`; on success it replaces `path`, else it is removed."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_jsonl(path: Path, records: Iterable[T], key: Callable[[T], Any]) -> int:
    """Write records sorted by `key`, atomically; a duplicate key is a bug and raises."""
    ordered = sorted(records, key=key)
    for prev, cur in zip(ordered, ordered[1:]):
        if key(prev) == key(cur):
            raise DataError(f"{path}: two records share the key {key(cur)!r}; refusing to write")
    with atomic_write(path) as fh:
        for record in ordered:
            fh.write(dumps(record) + "\n")
    return len(ordered)


def write_json(path: Path, obj: Any) -> None:
    """Write a JSON document (metrics, maps) atomically, pretty and key-sorted; NaN becomes null
    (strict JSON, which DVC and browsers parse)."""
    with atomic_write(path) as fh:
        json.dump(_finite(obj), fh, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
        fh.write("\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs on this host (the owner of a container or an MLflow run)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class AppendLog:
    """An append-only JSONL log of records by key, for caches that a killed run resumes from.

    - One exclusive lock per log (a lock file beside it): a second run on the same cache stops at
      once with a clear error instead of doing all the work again.
    - A torn last line (a writer killed mid-line, a full disk) is cut before anything is appended.
    - Every record carries a checksum of its own content; a record whose checksum does not match,
      or that `check` rejects (a record that disagrees with itself), is dropped, with one warning,
      and the file is compacted so the warning is not repeated: the caller re-does that work.
    - Each line goes out in a single write(), so a kill never leaves half a record behind.
    """

    def __init__(self, path: Path, owner: str, check: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        import fcntl
        import logging

        self.path, self._log = path, logging.getLogger(__name__)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise DataError(f"{path}: another `{owner}` is using this cache; wait for it to finish "
                            "(or stop it) and rerun") from None
        self.records: dict[str, dict[str, Any]] = {}
        self._dirty = False
        try:
            self._load(check)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except BaseException:
            os.close(self._lock)
            raise

    @staticmethod
    def checksum(record: dict[str, Any]) -> str:
        body = {k: v for k, v in record.items() if k != "sum"}
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]

    def _load(self, check: Callable[[dict[str, Any]], str | None] | None) -> None:
        data = self.path.read_bytes() if self.path.exists() else b""
        end = data.rfind(b"\n") + 1
        torn = len(data) - end
        bad: dict[str, int] = {}
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
                why = ("no record key" if not isinstance(record, dict) or not isinstance(record.get("key"), str)
                       else "checksum mismatch" if record.get("sum") != self.checksum(record)
                       else check(record) if check else None)
            except ValueError:
                record, why = None, "not JSON"
            if why:
                bad[why] = bad.get(why, 0) + 1
                continue
            self.records[record["key"]] = record  # type: ignore[index]
        if torn:
            self._log.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", self.path, torn)
        if bad:
            self._log.warning("%s: dropped %d record(s) that failed their checks (%s); their work is redone",
                              self.path, sum(bad.values()), ", ".join(f"{n} {why}" for why, n in sorted(bad.items())))
        if torn or bad:  # rewrite only what holds, so the next run starts clean
            with atomic_write(self.path, "wb") as fh:
                for record in self.records.values():
                    fh.write(self._line(record))

    def _line(self, record: dict[str, Any]) -> bytes:
        return (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode()

    def add(self, record: dict[str, Any]) -> None:
        """Append one record (a dict with a string `key`); its checksum is added here."""
        record = {**record, "sum": self.checksum(record)}
        line = self._line(record)
        try:
            written = os.write(self._fd, line)  # one write() of the whole line
        except OSError as exc:  # a full disk: name the file (a torn line left behind is cut on the next open)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        if written != len(line):  # a regular file takes less than asked only when the disk is full
            raise OSError(errno.ENOSPC, f"No space left on device (wrote {written} of {len(line)} bytes)",
                          str(self.path))
        self.records[record["key"]] = record
        self._dirty = True

    def sync(self) -> None:
        """fsync what was appended (durability against a machine crash; a killed process loses nothing)."""
        if self._dirty:
            self._dirty = False
            os.fsync(self._fd)

    def close(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self._fd)
            os.close(self._lock)  # releases the lock


def dump_joblib(model: Any, path: Path) -> None:
    """joblib.dump, atomically, and byte-identical when the same model is fitted again: sklearn's
    TF-IDF keeps the id() of its stop-word list (different in every process), which is dropped
    here (sklearn re-checks the list when it is missing)."""
    import joblib

    seen: set[int] = set()
    todo = [model]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            todo.extend(obj)
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            obj.__dict__.pop("_stop_words_id", None)
            todo.extend(obj.__dict__.values())
    with atomic_write(path, "wb") as fh:
        joblib.dump(model, fh)


def progress_bars() -> bool:
    """Progress bars on an interactive terminal, never in CI logs."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress(items: Iterable[Item], total: int, desc: str, unit: str, every_s: float = 30.0) -> Iterator[Item]:
    """`items`, reporting progress as they come: a tqdm bar on an interactive terminal; elsewhere (logs,
    CI) a plain line every `every_s` seconds and at the end, with the rate and the time left."""
    if total <= 0:
        yield from items
        return
    if progress_bars():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr)
        return
    log = logging.getLogger("complexitynet")
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s or done == total:
            last, rate = now, done / max(now - start, 1e-9)
            left = f", ~{(total - done) / rate:.0f} s left" if done < total else ""
            log.info("%s: %d/%d %ss (%.0f%%), %.0f s, %.1f %ss/s%s", desc, done, total, unit, 100 * done / total,
                     now - start, rate, unit, left)


def write_metrics(report: Path, metrics: Path, detail: Any, headline: Any) -> None:
    """A stage's numbers: the detail in reports/<stage>.json, the few headline numbers `dvc metrics
    show`, `dvc metrics diff` and `dvc exp show` compare in metrics/<stage>.json."""
    write_json(report, detail)
    write_json(metrics, headline)

