import pytest
from pydantic import BaseModel

from complexitynet.errors import DataError
from complexitynet.io import AppendLog, atomic_write, read_jsonl, write_jsonl


class Row(BaseModel):
    key: int
    text: str


def test_write_sorts_and_is_deterministic(tmp_path):
    rows = [Row(key=k, text=f"é{k}") for k in (3, 1, 2)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(a, rows, key=lambda r: r.key)
    write_jsonl(b, list(reversed(rows)), key=lambda r: r.key)
    assert a.read_bytes() == b.read_bytes()
    assert [r.key for r in read_jsonl(a, Row)] == [1, 2, 3]
    assert "é1" in a.read_text(encoding="utf-8")  # no ASCII escaping


def test_duplicate_keys_refused_and_nothing_written(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match="share the key"):
        write_jsonl(out, [Row(key=1, text="a"), Row(key=1, text="b")], key=lambda r: r.key)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_old_file_and_no_temp_on_error(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(out) as fh:
            fh.write("half")
            raise RuntimeError("killed")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_read_errors_name_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"key": 1, "text": "a"}\n{"key": 2, "text": \n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: not valid JSON"):
        read_jsonl(path, Row)
    path.write_text('{"key": 1, "text": "a"}\n\n{"key": "x", "text": "b"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:3: invalid Row record: field 'key'"):
        read_jsonl(path, Row)
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "missing.jsonl", Row)


def test_write_json_is_strict_json(tmp_path):
    import json

    from complexitynet.io import write_json

    path = tmp_path / "m.json"
    write_json(path, {"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": 2}})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None], "c": {"d": 2}}
    assert "NaN" not in path.read_text()


def test_atomic_dir_replaces_the_old_directory_only_when_the_block_succeeds(tmp_path):
    from complexitynet.io import atomic_dir

    target = tmp_path / "models" / "router"
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("1")
    assert (target / "a.json").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("2")
        raise RuntimeError("killed halfway")
    assert (target / "a.json").read_text() == "1"  # the old one stands
    assert sorted(p.name for p in target.parent.iterdir()) == ["router"]  # no half-written leftovers


def test_append_log_cuts_a_torn_tail_refuses_a_second_writer_and_drops_forged_records(tmp_path, caplog):
    import json

    path = tmp_path / "log.jsonl"
    log = AppendLog(path, "complexitynet test", lambda r: None if r.get("n", 0) >= 0 else "negative n")
    log.add({"key": "a", "n": 1})
    with pytest.raises(DataError, match="another `complexitynet test` is using this cache"):
        AppendLog(path, "complexitynet test")
    log.close()
    with open(path, "ab") as fh:
        fh.write(b'{"key": "b", "n')  # a writer killed mid-line (or a full disk)
    log = AppendLog(path, "complexitynet test")
    assert list(log.records) == ["a"] and "cut a torn last line" in caplog.text
    log.add({"key": "b", "n": 2})  # lands on its own line, not glued to the fragment
    log.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b"]

    # an edited record fails its checksum; a re-summed one that disagrees with itself fails the check
    edited = json.loads(lines[0]) | {"n": 5}
    forged = {"key": "c", "n": -1}
    forged["sum"] = AppendLog.checksum(forged)
    path.write_text("\n".join([json.dumps(edited), lines[1], json.dumps(forged), "not json"]) + "\n")
    caplog.clear()
    log = AppendLog(path, "complexitynet test", lambda r: None if r.get("n", 0) >= 0 else "negative n")
    assert list(log.records) == ["b"]
    assert "dropped 3 record(s)" in caplog.text and "1 checksum mismatch" in caplog.text
    log.close()
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["b"]  # compacted
    caplog.clear()
    AppendLog(path, "complexitynet test").close()
    assert caplog.text == ""  # the warning is not repeated


def test_progress_in_a_log_is_a_plain_line_with_the_time_left(caplog, monkeypatch):
    import logging

    from complexitynet import io

    monkeypatch.setattr(io, "progress_bars", lambda: False)
    with caplog.at_level(logging.INFO, logger="complexitynet"):
        assert list(io.progress(iter(range(4)), 4, "execute", "run", every_s=0.0)) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[0].startswith("execute: 1/4 runs (25%)") and "s left" in lines[0]
    assert lines[-1].startswith("execute: 4/4 runs (100%)") and "left" not in lines[-1]
