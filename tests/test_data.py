"""Dataset registry: checksums of the real data, resumable downloads and the `defusal data` CLI.

Downloads run against a local HTTP server on 127.0.0.1 that serves a small test-only dataset of
random bytes, whose sha256 checksums the tests compute with hashlib.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from defusal.cli import main
from defusal.data import DATASETS, DataFile, Dataset
from defusal.data.fetch import fetch
from defusal.data.verify import sha256_file, status, verify
from defusal.errors import DataCorruptError, DataMissingError, DefusalError

TOY_FOLDER = "toyfolder"
TOY_SIZES = {"a.bin": 300_000, "b.bin": 5_000}


# ---------------------------------------------------------------------------------------------
# Local HTTP server


class _Handler(BaseHTTPRequestHandler):
    """Serve ``server.files`` with Range support; ``server.modes[path]`` selects a failure.

    Modes: ``ok``, ``corrupt`` (every byte inverted), ``truncate`` (full Content-Length, then
    close after half the body), ``ignore_range`` (always status 200), ``stall`` (headers and a
    few bytes, then wait until the test ends). A path not in ``server.files`` gets status 404.
    """

    def do_GET(self) -> None:
        server = self.server
        range_header = self.headers.get("Range")
        server.requests.append((self.path, range_header))
        body = server.files.get(self.path)
        mode = server.modes.get(self.path, "ok")
        if body is None:
            self.send_error(404)
            return
        if mode == "corrupt":
            body = bytes(byte ^ 0xFF for byte in body)

        start = 0
        if range_header is not None and mode != "ignore_range":
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()

        if mode == "truncate":
            self.wfile.write(payload[: len(payload) // 2])
            self.close_connection = True
        elif mode == "stall":
            self.wfile.write(payload[:100])
            server.release.wait(10)
            self.close_connection = True
        else:
            self.wfile.write(payload)

    def log_message(self, format, *args) -> None:  # noqa: A002 - signature fixed by the base
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """Ignore broken pipes from connections that a test closed on purpose."""


@pytest.fixture
def server():
    """A running HTTP server on 127.0.0.1; ``server.base`` is its address."""
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    httpd.files = {}
    httpd.modes = {}
    httpd.requests = []
    httpd.release = threading.Event()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _toy_bytes() -> dict[str, bytes]:
    generator = random.Random(1234)
    return {name: generator.randbytes(size) for name, size in TOY_SIZES.items()}


def _register_toy(monkeypatch, contents: dict[str, bytes], urls: dict[str, str] | None = None):
    urls = urls or {}
    files = tuple(
        DataFile(name, len(data), hashlib.sha256(data).hexdigest(), urls.get(name))
        for name, data in contents.items()
    )
    entry = Dataset(
        name="toy", folder=TOY_FOLDER, description="random bytes", licence="none", files=files
    )
    monkeypatch.setitem(DATASETS, "toy", entry)
    return entry


@pytest.fixture
def toy(monkeypatch, server):
    """The test-only dataset ``toy``, registered and served at ``<server>/toyfolder/<file>``."""
    contents = _toy_bytes()
    _register_toy(monkeypatch, contents)
    for name, data in contents.items():
        server.files[f"/{TOY_FOLDER}/{name}"] = data
    return contents


def _part(tmp_path: Path, name: str) -> Path:
    return tmp_path / TOY_FOLDER / f"{name}.part"


# ---------------------------------------------------------------------------------------------
# Real data


def test_real_data_verify_all(real_data_dir, capsys):
    status_code = main(["data", "verify", "--data-dir", str(real_data_dir)])
    output = capsys.readouterr().out
    assert status_code == 0
    for name, entry in DATASETS.items():
        for data_file in entry.files:
            assert f"OK        {name}/{data_file.name}" in output


def test_real_file_sha256_hashlib(real_data_dir):
    entry = DATASETS["mnist"]
    data_file = entry.file("t10k-labels-idx1-ubyte.gz")
    data = (real_data_dir / entry.folder / data_file.name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == data_file.sha256
    assert len(data) == data_file.size


def test_sha256_file_chunked(tmp_path):
    data = random.Random(5).randbytes(10_000)
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=333) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# fetch


def test_fetch_success(toy, server, tmp_path):
    results = fetch("toy", tmp_path, mirror=server.base, progress=False)
    for name, data in toy.items():
        assert (tmp_path / TOY_FOLDER / name).read_bytes() == data
        assert not _part(tmp_path, name).exists()
    assert [result.action for result in results] == ["downloaded", "downloaded"]


def test_fetch_canonical_url(monkeypatch, server, tmp_path):
    contents = _toy_bytes()
    urls = {name: f"{server.base}/elsewhere/{name}" for name in contents}
    _register_toy(monkeypatch, contents, urls)
    for name, data in contents.items():
        server.files[f"/elsewhere/{name}"] = data
    fetch("toy", tmp_path, progress=False)
    for name, data in contents.items():
        assert (tmp_path / TOY_FOLDER / name).read_bytes() == data


def test_fetch_corrupt(toy, server, tmp_path):
    server.modes[f"/{TOY_FOLDER}/a.bin"] = "corrupt"
    expected = hashlib.sha256(toy["a.bin"]).hexdigest()
    actual = hashlib.sha256(bytes(byte ^ 0xFF for byte in toy["a.bin"])).hexdigest()
    with pytest.raises(DataCorruptError) as caught:
        fetch("toy", tmp_path, mirror=server.base, progress=False)
    message = str(caught.value)
    assert expected in message
    assert actual in message
    assert "a.bin" in message
    assert "\n" not in message
    assert not (tmp_path / TOY_FOLDER / "a.bin").exists()
    assert not _part(tmp_path, "a.bin").exists()


def test_fetch_truncated_resumes(toy, server, tmp_path):
    path = f"/{TOY_FOLDER}/a.bin"
    server.modes[path] = "truncate"
    with pytest.raises(DefusalError, match="rerun `defusal data fetch toy`") as caught:
        fetch("toy", tmp_path, mirror=server.base, progress=False)
    assert not isinstance(caught.value, DataCorruptError)
    half = TOY_SIZES["a.bin"] // 2
    assert _part(tmp_path, "a.bin").stat().st_size == half

    server.modes[path] = "ok"
    fetch("toy", tmp_path, mirror=server.base, progress=False)
    assert (tmp_path / TOY_FOLDER / "a.bin").read_bytes() == toy["a.bin"]
    assert (path, f"bytes={half}-") in server.requests
    assert not _part(tmp_path, "a.bin").exists()


def test_fetch_ignored_range_restarts(toy, server, tmp_path):
    path = f"/{TOY_FOLDER}/a.bin"
    server.modes[path] = "ignore_range"
    part = _part(tmp_path, "a.bin")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # wrong bytes: appending to them would fail the checksum
    fetch("toy", tmp_path, mirror=server.base, progress=False)
    assert (tmp_path / TOY_FOLDER / "a.bin").read_bytes() == toy["a.bin"]
    assert [request for request in server.requests if request[0] == path] == [(path, "bytes=1000-")]


def test_fetch_bad_resume_restarts(toy, server, tmp_path):
    path = f"/{TOY_FOLDER}/a.bin"
    part = _part(tmp_path, "a.bin")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)
    fetch("toy", tmp_path, mirror=server.base, progress=False)
    assert (tmp_path / TOY_FOLDER / "a.bin").read_bytes() == toy["a.bin"]
    requests = [request for request in server.requests if request[0] == path]
    assert requests == [(path, "bytes=1000-"), (path, None)]


def test_fetch_range_416_restarts(toy, server, tmp_path):
    path = f"/{TOY_FOLDER}/a.bin"
    server.files[path] = toy["a.bin"][:1000]
    part = _part(tmp_path, "a.bin")
    part.parent.mkdir(parents=True)
    part.write_bytes(toy["a.bin"][:2000])
    with pytest.raises(DataCorruptError, match="1000 bytes"):
        fetch("toy", tmp_path, mirror=server.base, progress=False)
    requests = [request for request in server.requests if request[0] == path]
    assert requests == [(path, "bytes=2000-"), (path, None)]
    assert not part.exists()


def test_fetch_404(toy, server, tmp_path):
    del server.files[f"/{TOY_FOLDER}/b.bin"]
    with pytest.raises(DefusalError) as caught:
        fetch("toy", tmp_path, mirror=server.base, progress=False)
    message = str(caught.value)
    assert f"{server.base}/{TOY_FOLDER}/b.bin" in message
    assert "404" in message
    assert "\n" not in message


def test_fetch_stall_times_out(toy, server, tmp_path):
    server.modes[f"/{TOY_FOLDER}/a.bin"] = "stall"
    with pytest.raises(DefusalError, match="rerun"):
        fetch("toy", tmp_path, mirror=server.base, progress=False, timeout=0.3)
    assert _part(tmp_path, "a.bin").stat().st_size == 100


def test_fetch_present_skipped(toy, server, tmp_path):
    folder = tmp_path / TOY_FOLDER
    folder.mkdir()
    (folder / "a.bin").write_bytes(toy["a.bin"])
    results = fetch("toy", tmp_path, mirror=server.base, progress=False)
    assert [request[0] for request in server.requests] == [f"/{TOY_FOLDER}/b.bin"]
    assert [result.action for result in results] == ["present", "downloaded"]


def test_fetch_present_corrupt(toy, server, tmp_path):
    folder = tmp_path / TOY_FOLDER
    folder.mkdir()
    bad = b"x" + toy["a.bin"][1:]
    (folder / "a.bin").write_bytes(bad)
    with pytest.raises(DataCorruptError) as caught:
        fetch("toy", tmp_path, mirror=server.base, progress=False)
    assert hashlib.sha256(bad).hexdigest() in str(caught.value)
    assert hashlib.sha256(toy["a.bin"]).hexdigest() in str(caught.value)
    assert server.requests == []


def test_fetch_no_address(monkeypatch, tmp_path):
    _register_toy(monkeypatch, _toy_bytes())
    with pytest.raises(DefusalError, match="no canonical download address") as caught:
        fetch("toy", tmp_path, progress=False)
    assert str(tmp_path / TOY_FOLDER) in str(caught.value)
    assert "--mirror" in str(caught.value)


def test_fetch_invalid_mirror(toy, tmp_path):
    with pytest.raises(DefusalError, match="invalid mirror"):
        fetch("toy", tmp_path, mirror="ftp://127.0.0.1/x", progress=False)


def test_fetch_local_folder_mirror(toy, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / TOY_FOLDER).mkdir(parents=True)
    for name, data in toy.items():
        (mirror / TOY_FOLDER / name).write_bytes(data)
    fetch("toy", tmp_path / "data", mirror=str(mirror), progress=False)
    for name, data in toy.items():
        assert (tmp_path / "data" / TOY_FOLDER / name).read_bytes() == data


# ---------------------------------------------------------------------------------------------
# status and verify


def test_status_states(toy, tmp_path):
    folder = tmp_path / TOY_FOLDER
    assert status("toy", tmp_path).state == "missing"
    folder.mkdir()
    _part(tmp_path, "a.bin").write_bytes(b"abc")
    assert status("toy", tmp_path).state == "partial"
    (folder / "a.bin").write_bytes(toy["a.bin"])
    assert status("toy", tmp_path).state == "partial"
    (folder / "b.bin").write_bytes(toy["b.bin"])
    report = status("toy", tmp_path)
    assert report.state == "present"
    assert report.bytes_present == sum(TOY_SIZES.values())
    (folder / "b.bin").write_bytes(toy["b.bin"][:-1])
    assert status("toy", tmp_path).state == "corrupt"


def test_verify_mismatch_and_missing(toy, tmp_path):
    folder = tmp_path / TOY_FOLDER
    folder.mkdir()
    bad = toy["a.bin"][:-1] + b"!"
    (folder / "a.bin").write_bytes(bad)
    checks = verify("toy", tmp_path)
    assert [check.state for check in checks] == ["mismatch", "missing"]
    assert checks[0].actual_sha256 == hashlib.sha256(bad).hexdigest()
    assert checks[0].expected_sha256 == hashlib.sha256(toy["a.bin"]).hexdigest()


def test_verify_strict_raises(toy, tmp_path):
    folder = tmp_path / TOY_FOLDER
    folder.mkdir()
    bad = toy["a.bin"][:-1] + b"!"
    (folder / "a.bin").write_bytes(bad)
    with pytest.raises(DataCorruptError) as caught:
        verify("toy", tmp_path, strict=True)
    assert hashlib.sha256(bad).hexdigest() in str(caught.value)
    assert hashlib.sha256(toy["a.bin"]).hexdigest() in str(caught.value)


def test_verify_dataset_missing(toy, tmp_path):
    with pytest.raises(DataMissingError, match="'toy' is missing"):
        verify("toy", tmp_path)


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_list(real_data_dir, capsys):
    assert main(["data", "list", "--data-dir", str(real_data_dir)]) == 0
    output = capsys.readouterr().out
    for name in DATASETS:
        assert re.search(rf"^{name}\s+present\s", output, re.MULTILINE)


def test_cli_verify_unknown(capsys):
    assert main(["data", "verify", "nope"]) == 2
    error = capsys.readouterr().err.strip()
    assert "nope" in error
    assert "mnist" in error
    assert "\n" not in error


def test_cli_verify_corrupt_copy(real_data_dir, tmp_path, capsys):
    entry = DATASETS["dandekar_tracks"]
    data_file = entry.files[0]
    (tmp_path / entry.folder).mkdir()
    data = bytearray((real_data_dir / entry.folder / data_file.name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / entry.folder / data_file.name).write_bytes(data)
    assert main(["data", "verify", "dandekar_tracks", "--data-dir", str(tmp_path)]) == 1
    output = capsys.readouterr().out
    mismatch = [line for line in output.splitlines() if line.startswith("MISMATCH")]
    assert len(mismatch) == 1
    assert data_file.sha256 in mismatch[0]
    assert hashlib.sha256(data).hexdigest() in mismatch[0]


def test_cli_verify_missing_dir(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    assert main(["data", "verify", "--data-dir", str(missing)]) == 2
    error = capsys.readouterr().err.strip()
    assert str(missing) in error
    assert "\n" not in error


def test_cli_verify_dataset_missing(tmp_path, capsys):
    assert main(["data", "verify", "ptb", "--data-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert str(tmp_path / "ptb") in error
    assert "\n" not in error


def test_cli_fetch_mirror(toy, server, tmp_path, capsys):
    arguments = ["data", "fetch", "toy", "--mirror", server.base, "--data-dir", str(tmp_path)]
    assert main(arguments) == 0
    for name, data in toy.items():
        assert (tmp_path / TOY_FOLDER / name).read_bytes() == data
    assert "a.bin" in capsys.readouterr().err  # the tqdm progress bar
    assert main([*arguments, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("present") == len(toy)
    assert captured.err == ""


def test_cli_fetch_no_address(tmp_path, capsys):
    shutil.rmtree(tmp_path)
    assert main(["data", "fetch", "ptb", "--data-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "no canonical download address" in error
    assert "\n" not in error
    assert not tmp_path.exists()


def test_cli_data_dir_before_command(capsys, real_data_dir):
    status = main(["--data-dir", str(real_data_dir), "data", "verify", "dandekar_tracks"])

    assert status == 0
    assert "1 of 1 files OK" in capsys.readouterr().out


def test_cli_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["data", "verify", "--no-such-option"])

    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("defusal: error:")


def test_cli_list_rejects_file_as_data_dir(tmp_path, capsys):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("x")

    assert main(["data", "list", "--data-dir", str(not_a_folder)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
