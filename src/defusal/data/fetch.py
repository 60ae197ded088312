"""Download dataset files over HTTP(S), resumably, and check them against the registry.

Each file is written to ``<file>.part`` next to its final path. An interrupted transfer keeps
the ``.part`` file and the next :func:`fetch` resumes it with an HTTP ``Range`` request. Only a
file whose size and sha256 match the registry is renamed onto its final name (``os.replace``,
atomic on POSIX), so a reader never sees a half-written or corrupt dataset file.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from defusal.data import DataFile, dataset, resolve_data_dir
from defusal.data.verify import CHUNK_SIZE, PART_SUFFIX, corrupt_message, sha256_file
from defusal.errors import DataCorruptError, DefusalError

__all__ = ["FetchResult", "fetch", "file_url"]

logger = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 60.0
"""Seconds a connect or a single read may block before the download fails as timed out."""

_MIRROR_SCHEMES = ("http", "https", "file")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class FetchResult:
    """Outcome for one file: ``action`` is ``"present"`` (already there) or ``"downloaded"``."""

    name: str
    path: Path
    action: str


def file_url(name: str, data_file: DataFile, mirror: str | None = None) -> str | None:
    """Return the download address of ``data_file`` of dataset ``name``.

    With a mirror it is ``<mirror>/<dataset folder>/<file name>``. Without one it is the
    file's canonical ``url`` from the registry, which is ``None`` when no public address serves
    the exact bytes.
    """
    if mirror is None:
        return data_file.url
    folder = urllib.parse.quote(dataset(name).folder)
    return f"{_mirror_base(mirror)}/{folder}/{urllib.parse.quote(data_file.name)}"


def fetch(
    name: str,
    data_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
    progress: bool = True,
    timeout: float = SOCKET_TIMEOUT_S,
) -> list[FetchResult]:
    """Download every missing file of dataset ``name`` into ``<data dir>/<folder>/``.

    Files already present with the registry checksum are skipped. A ``.part`` file left by an
    interrupted run is resumed with an HTTP ``Range`` request. When the server ignores the
    range (status 200), the download restarts from byte zero. When a resumed file fails the
    checksum, it is deleted and downloaded once more from zero.

    Args:
        name: dataset name in the registry.
        data_dir: data folder; ``None`` means ``$DEFUSAL_DATA``, else ``~/.cache/defusal``.
        mirror: base address (``http``, ``https`` or ``file`` URL, or a local folder) that serves
            ``<mirror>/<dataset folder>/<file name>``. It replaces the registry's addresses and
            makes datasets without a canonical address fetchable.
        progress: show a tqdm progress bar per file.
        timeout: seconds a connect or a single read may block.

    Returns:
        One :class:`FetchResult` per registry file, in registry order.

    Raises:
        DefusalError: ``name`` is unknown, the mirror is not a usable address, the data folder
            cannot be written, a file has no download address, the server returns an HTTP
            error (the message names the URL and status), or the transfer stopped early (the
            ``.part`` file is kept and a rerun resumes it).
        DataCorruptError: a present file or a fresh download has the wrong sha256. The message
            names the file and both checksums, and a bad download is deleted.
    """
    entry = dataset(name)
    folder = resolve_data_dir(data_dir) / entry.folder
    if mirror is not None:
        _mirror_base(mirror)

    to_download: list[tuple[DataFile, str]] = []
    no_address: list[str] = []
    for data_file in entry.files:
        path = folder / data_file.name
        if path.is_file():
            actual = sha256_file(path)
            if actual != data_file.sha256:
                raise DataCorruptError(
                    corrupt_message(path, actual, data_file.sha256)
                    + f". Delete it and rerun `defusal data fetch {name}`"
                )
            logger.info("%s is present, skipping", path)
            continue
        url = file_url(name, data_file, mirror)
        if url is None:
            no_address.append(data_file.name)
        else:
            to_download.append((data_file, url))

    if no_address and not to_download:
        raise _no_address_error(name, folder, no_address)
    if to_download:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DefusalError(
                f"cannot create the data folder {folder} ({error.strerror}). Pass --data-dir "
                "or set DEFUSAL_DATA to a writable folder"
            ) from error

    for data_file, url in to_download:
        _fetch_file(name, data_file, url, folder, progress, timeout)
    if no_address:
        raise _no_address_error(name, folder, no_address)

    downloaded = {data_file.name for data_file, _ in to_download}
    return [
        FetchResult(
            data_file.name,
            folder / data_file.name,
            "downloaded" if data_file.name in downloaded else "present",
        )
        for data_file in entry.files
    ]


def _mirror_base(mirror: str) -> str:
    """Return the mirror as a URL without a trailing slash. A local folder becomes a file:// URL."""
    scheme = urllib.parse.urlsplit(mirror).scheme
    if not scheme and Path(mirror).expanduser().is_dir():
        return Path(mirror).expanduser().resolve().as_uri()
    if scheme not in _MIRROR_SCHEMES:
        raise DefusalError(
            f"invalid mirror {mirror!r}. Give an http://, https:// or file:// address, or an "
            "existing local folder"
        )
    return mirror.rstrip("/")


def _no_address_error(name: str, folder: Path, files: list[str]) -> DefusalError:
    return DefusalError(
        f"dataset {name!r} has no canonical download address for {', '.join(files)}. Copy the "
        f"files into {folder}/ or pass --mirror URL"
    )


def _fetch_file(
    name: str, data_file: DataFile, url: str, folder: Path, progress: bool, timeout: float
) -> Path:
    """Download one file through its ``.part`` file, check it and rename it into place."""
    # NOTE: there is no lock. Two fetch runs of one dataset at once write the same .part file,
    # which then fails the checksum, and a single rerun repairs it.
    target = folder / data_file.name
    part = target.with_name(target.name + PART_SUFFIX)

    resumed = _download(name, url, part, data_file.size, progress, timeout)
    actual = sha256_file(part)
    if actual != data_file.sha256 and resumed:
        logger.warning(
            "resumed download of %s failed the checksum; deleting it and restarting from zero",
            url,
        )
        part.unlink()
        _download(name, url, part, data_file.size, progress, timeout)
        actual = sha256_file(part)

    if actual != data_file.sha256:
        size = part.stat().st_size
        part.unlink(missing_ok=True)
        raise DataCorruptError(
            f"download of {data_file.name} from {url} has sha256 {actual} ({size} bytes) but "
            f"the registry expects {data_file.sha256} ({data_file.size} bytes). The download "
            "was deleted. Check the address or mirror and rerun fetch"
        )
    os.replace(part, target)
    logger.info("downloaded %s to %s", url, target)
    return target


def _download(name: str, url: str, part: Path, size: int, progress: bool, timeout: float) -> bool:
    """Transfer ``url`` into ``part``, resuming from its current length.

    Returns:
        Whether ``part`` kept bytes from an earlier transfer (a resume), so a bad checksum may
        come from stale bytes rather than from the server.
    """
    offset = part.stat().st_size if part.is_file() else 0
    if offset > size:
        logger.info(
            "%s is longer than the expected %d bytes, so the download restarts from zero",
            part,
            size,
        )
        part.unlink()
        offset = 0
    if offset == size and offset > 0:
        # An earlier run finished the transfer but stopped before the checksum.
        return True

    response = _open(url, offset, timeout)
    if response is None:
        # The server rejected the range (status 416), so its file is shorter than ours.
        part.unlink()
        offset = 0
        response = _open(url, 0, timeout)

    with response:
        status = response.getcode()
        if offset and status == 206 and _range_start(response) == offset:
            mode = "ab"
        else:
            if offset:
                logger.info("server ignored the Range request for %s; restarting from zero", url)
                if status == 206:
                    # A 206 response that starts at the wrong byte cannot be appended.
                    response.close()
                    part.unlink()
                    return _download(name, url, part, size, progress, timeout)
            offset = 0
            mode = "wb"
        expected = _content_length(response)
        received = _copy(response, part, mode, offset, size, progress, name, url)

    if expected is not None and received < expected:
        reason = "the connection closed before Content-Length was reached"
        raise _interrupted_error(name, url, part, offset + received, size, reason)
    return mode == "ab"


def _open(url: str, offset: int, timeout: float):
    """Open ``url`` from byte ``offset``, or return ``None`` when the server responds 416."""
    request = urllib.request.Request(url, headers={"User-Agent": "defusal"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            return None
        raise DefusalError(
            f"download of {url} failed with HTTP status {error.code} ({error.reason}). Check "
            "the address or the mirror"
        ) from None
    except urllib.error.URLError as error:
        raise DefusalError(
            f"download of {url} failed ({error.reason}). Check the address and the network, "
            "then rerun fetch"
        ) from error
    except TimeoutError as error:
        raise DefusalError(
            f"download of {url} timed out after {timeout:g} s. Rerun fetch to try again"
        ) from error


def _copy(response, part, mode, offset, size, progress, name, url) -> int:
    """Stream ``response`` into ``part`` in chunks and return the number of bytes received."""
    received = 0
    bar = tqdm(
        total=size,
        initial=offset,
        desc=part.name.removesuffix(PART_SUFFIX),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
    )
    with bar, open(part, mode) as out:
        try:
            # read1 returns what one socket read delivers, so bytes received before a stall or
            # a dropped connection reach the .part file and a rerun can resume after them.
            while chunk := response.read1(CHUNK_SIZE):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except TimeoutError as error:
            out.flush()
            reason = "the server sent nothing for the socket timeout"
            raise _interrupted_error(name, url, part, offset + received, size, reason) from error
        except (ConnectionError, http.client.IncompleteRead) as error:
            out.flush()
            reason = f"connection failed: {error!r}"
            raise _interrupted_error(name, url, part, offset + received, size, reason) from error
        out.flush()
        os.fsync(out.fileno())
    return received


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _range_start(response) -> int | None:
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _interrupted_error(
    name: str, url: str, part: Path, have: int, size: int, reason: str
) -> DefusalError:
    return DefusalError(
        f"download of {url} stopped after {have} of {size} bytes ({reason}). The partial file "
        f"{part} is kept, so rerun `defusal data fetch {name}` to resume it"
    )
