"""Benchmark: time to list (index) a folder of 100,000 image files for streaming.

    python benchmarks/index_folder.py [--files 100000] [--classes 100] [--dir DIR] [--keep]

Writes ``--files`` small PNG files (the same bytes each: listing never opens them) into ``--classes`` class
folders under ``--dir`` (default: a temporary folder, removed afterwards), then times:

* ``index_s``: :func:`largemeta.data.store.index.index_folder` walking the folder (``os.scandir``; no file
  opened), splitting it and storing the listing in a fresh cache;
* ``index_cached_s``: the same call again, served from the stored listing (every directory's mtime checked);
* ``rglob_s``: for comparison, the listing version 0.1 did before decoding (``Path.rglob`` + ``is_file``
  per file, sorted), which the device path's ``load_folder`` no longer uses.

The page cache is warm for all three (the files were just written); a cold first walk reads the directories
from disk and takes longer. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from largemeta.data.store.index import IMAGE_SUFFIXES, index_folder


def write_folder(root: Path, files: int, classes: int) -> float:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="PNG")
    data = buf.getvalue()
    t0 = time.perf_counter()
    for c in range(classes):
        d = root / f"class{c:03d}"
        d.mkdir(parents=True)
        for i in range(c, files, classes):
            (d / f"{i:07d}.png").write_bytes(data)
    return time.perf_counter() - t0


def rglob_listing(root: Path) -> int:
    n = 0
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        n += len(sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
    return n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--dir", help="where to write the folder (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the folder")
    args = parser.parse_args(argv)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="largemeta-index-"))
    root, cache = base / "folder", base / "cache"
    try:
        write_s = write_folder(root, args.files, args.classes)
        t0 = time.perf_counter()
        index = index_folder(root, cache)
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = index_folder(root, cache)
        cached_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        n = rglob_listing(root)
        rglob_s = time.perf_counter() - t0
        counts = index.counts()
        assert sum(counts.values()) == n == args.files and again.counts() == counts
        print(
            json.dumps(
                {
                    "files": args.files,
                    "classes": args.classes,
                    "cores": os.cpu_count(),
                    "write_folder_s": round(write_s, 2),
                    "index_s": round(index_s, 3),
                    "index_cached_s": round(cached_s, 3),
                    "rglob_s": round(rglob_s, 3),
                    "split": counts,
                },
                indent=2,
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
