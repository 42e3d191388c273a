import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from complexitynet.errors import ChecksumError, DataError
from complexitynet.fetch import MIRROR_ENV, fetch, mirror_dirs
from complexitynet.sources import FILES, SourceFile

PAYLOAD = b'{"task_id": 1}\n'
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def one_file(url: str = "http://127.0.0.1:9/none", sha: str = SHA) -> dict[str, SourceFile]:
    return {"demo": SourceFile("demo/demo.jsonl", url, sha, "test")}


@pytest.fixture()
def http_server(tmp_path):
    """A real HTTP server on loopback serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_declared_source_has_url_and_sha():
    assert {"mbpp", "humaneval", "complexitynet-gpt", "complexitynet-llama", "complexitynet-refined",
            "adaptivellm-gpt4o", "adaptivellm-gpt3.5", "adaptivellm-codellama-7b-instruct-hf"} <= set(FILES)
    assert sum(k.startswith("adaptivellm-") for k in FILES) == 10  # GPT-3.5, GPT-4o + 8 open models
    for src in FILES.values():
        assert src.url.startswith("https://raw.githubusercontent.com/") and len(src.sha256) == 64


def test_mirror_copy_is_verified_and_cached(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "demo").mkdir(parents=True)
    (mirror / "demo" / "demo.jsonl").write_bytes(PAYLOAD)
    [got] = fetch(tmp_path / "out", [tmp_path / "absent", mirror], files=one_file())
    assert got.origin == f"mirror:{mirror}" and got.path.read_bytes() == PAYLOAD
    [again] = fetch(tmp_path / "out", [mirror], files=one_file())
    assert again.origin == "cached"


def test_checksum_mismatch_in_mirror_is_an_error_and_leaves_nothing(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "demo").mkdir(parents=True)
    (mirror / "demo" / "demo.jsonl").write_bytes(PAYLOAD + b"tampered")
    with pytest.raises(ChecksumError, match=f"expected {SHA}"):
        fetch(tmp_path / "out", [mirror], files=one_file())
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_download_verified_over_http(tmp_path, http_server):
    root, base = http_server
    (root / "demo.jsonl").write_bytes(PAYLOAD)
    [got] = fetch(tmp_path / "out", [], files=one_file(f"{base}/demo.jsonl"))
    assert got.origin.endswith("/demo.jsonl") and got.path.read_bytes() == PAYLOAD


def test_download_with_wrong_checksum_leaves_no_file(tmp_path, http_server):
    root, base = http_server
    (root / "demo.jsonl").write_bytes(PAYLOAD)
    with pytest.raises(ChecksumError, match="upstream file changed"):
        fetch(tmp_path / "out", [], files=one_file(f"{base}/demo.jsonl", sha="0" * 64))
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_unreachable_url_explains_the_mirror(tmp_path, http_server):
    _, base = http_server
    with pytest.raises(DataError, match=MIRROR_ENV):
        fetch(tmp_path / "out", [], files=one_file(f"{base}/missing.jsonl"))


def test_env_mirror_is_tried_first(monkeypatch, tmp_path):
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path))
    assert mirror_dirs(["../shared/data"]) == [tmp_path, Path("../shared/data")]
    monkeypatch.delenv(MIRROR_ENV)
    assert mirror_dirs(["a"]) == [Path("a")]


def test_real_sources_verify(sources_dir):
    for src in FILES.values():
        assert (sources_dir / src.relpath).is_file()
