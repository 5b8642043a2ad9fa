"""One pinned file over HTTP(S): resumable, checked against its size and digest, renamed into place whole.

Bytes are appended to ``<final>.part``; a broken transfer is resumed with an HTTP ``Range`` request the next
time; the finished file is checked against its pinned size and digest and only then renamed into place. A
digest mismatch removes the partial file and is refused in one line (the host served something other than
what was pinned: never "try the next source"). The digest is a sha256, except where the only checksum
anyone publishes for a file is an md5 (Tiny ImageNet's zip): then the pin is its exact size and md5, and the
source says so. Used by the Hugging Face Hub source (:mod:`largemeta.data.sources.hub`), the authors' archives
(:mod:`largemeta.data.sources.archives`) and upstream hosts with many pinned files
(:mod:`largemeta.data.sources.quickdraw_full`).
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from largemeta import console
from largemeta.console import notice
from largemeta.data.sources.fetch import SourceUnavailable, _move_durably
from largemeta.data.store.cache import check_digest
from largemeta.errors import UserError
from largemeta.files import file_digest

TIMEOUT_S = 60
_CHUNK = 1 << 20


def download_verified(
    url: str,
    final: Path,
    *,
    size: int | None,
    digest: str,
    label: str,
    desc: str,
    headers: Mapping[str, str] | None = None,
    offline: str | None = None,
    why: Callable[[int], str] = lambda code: "",
    algorithm: str = "sha256",
) -> Path:
    """``final`` holding the file at ``url`` whose ``algorithm`` digest (and size, when pinned) is the pin's.

    ``size`` None: the server's ``Content-Length``/``Content-Range`` tells a short transfer from a whole one
    and the digest decides. ``offline``: when set (the name of the switch that is on), a file not yet in place
    is a :class:`SourceUnavailable` and no request is made. ``label`` names the file in a digest mismatch,
    ``desc`` in the progress bar; ``why(status)`` adds a hint to an HTTP error."""
    if final.is_file():
        if final.stat().st_size == (size or final.stat().st_size) and file_digest(final, algorithm) == digest:
            return final
        notice(f"{final} does not match its pinned {algorithm}; downloading it again")
        final.unlink()
    if offline:
        raise SourceUnavailable(f"{desc} is not in the cache and {offline} is set")
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    stated = _transfer(url, part, size, desc, dict(headers or {}), why)
    expected = size if size is not None else stated  # the pin wins over what a server says
    got = part.stat().st_size
    if expected is not None and got != expected:  # the connection closed early: keep the part, resume
        if got > expected:
            part.unlink()
        raise SourceUnavailable(f"{url}: {got} of {expected} bytes arrived; run the command again to resume")
    try:
        check_digest(label, file_digest(part, algorithm), digest, algorithm)
    except UserError:
        part.unlink()
        raise
    _move_durably(part, final)
    return final


def _transfer(
    url: str, part: Path, size: int | None, desc: str, headers: dict[str, str], why: Callable[[int], str]
) -> int | None:
    """Append the missing bytes to ``part`` (a ``Range`` request when part of it is there); the file's whole
    size as the pin or the server states it (None when neither does)."""
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have >= size:  # complete (or too long): the caller checks it
        return size
    headers.setdefault("User-Agent", "largemeta")
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part is whole (its sha256 decides)
            return have
        raise SourceUnavailable(f"{url}: HTTP {err.code} {err.reason}{why(err.code)}") from None
    except (urllib.error.URLError, OSError) as err:
        raise SourceUnavailable(f"{url}: {getattr(err, 'reason', err)}") from None
    with resp:
        if have and resp.status != 206:  # the server ignored the range: start again
            have = 0
        total = size or _total(resp, have)
        done = have
        try:
            with (
                open(part, "ab" if have else "wb") as out,
                console.bar(total=total, initial=have, unit="B", unit_scale=True, desc=desc) as bar,
            ):
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        except (http.client.HTTPException, OSError) as err:
            raise SourceUnavailable(
                f"{url}: transfer broke after {done} of {total or '?'} bytes ({type(err).__name__}); "
                "run the command again to resume"
            ) from None
    return total


def _total(resp: Any, have: int) -> int | None:
    """The whole file's size from a response: ``Content-Range``'s total (206) or ``have + Content-Length``."""
    rng = resp.headers.get("Content-Range") or ""
    if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return have + int(length) if length and length.isdigit() else None
