"""Throughput of ``imagenorm stats`` on the same JPEGs as a folder, as WebDataset tar shards, and as parquet.

The 2,000 photo JPEGs of ``benchmarks/stats_throughput.py`` (500x375, quality 90, made once
under benchmarks/data by ``common.photo_jpegs``) are measured where they live:
  folder   the folder itself (``compute_stats("benchmarks/data/jpeg_2000_500x375")``);
  tar      8 WebDataset shards written by ``webdataset.ShardWriter`` (``maxcount`` 250, key the
           file stem, member ``.jpg`` holding the original bytes), named by a brace pattern
           ``.../train-{000000..000007}.tar``;
  parquet  4 parquet files written by ``datasets`` (``Dataset.from_dict`` with an ``Image``
           feature holding the original bytes, ``.shard(4, i, contiguous=True).to_parquet``,
           datasets' default row groups), named by a glob ``.../*.parquet``.
The containers are made once under ``benchmarks/data/jpeg_2000_500x375_containers`` and
rebuilt only when the JPEGs change (a manifest records their names, sizes and mtimes); on
every run each member's bytes are checked against its file.

Before any timing, each container's statistics must equal the folder's exactly (files,
per-channel and pooled count, mean, std, min, max and percentiles, compared with ``==``),
or the script aborts; every timed call is checked the same way afterwards.

Timing: ``imagenorm.compute_stats(source, workers=w)`` for w = 0 (this process only:
"1 worker") and w = 2 (two worker processes), one warm-up call each, then ``--rounds``
rounds in which all six contenders run in turn (the order reversed every other round, to
spread the VM's drift over all of them). The best round is what counts (the median, and the
ratio of best CPU seconds, workers included, are printed beside it).

Target (issue 12): each container source >= 0.9 x the folder's throughput, with 1 and 2 workers.

    python benchmarks/containers_throughput.py [--files 2000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tarfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, os.path.dirname(__file__))
from common import DATA, cpu_seconds, photo_jpegs  # noqa: E402

import imagenorm  # noqa: E402

FOLDER_FILES = 2000  # the folder of stats_throughput.py
SHARDS = 8
PARQUET_FILES = 4
TARGET = 0.9
SOURCES = ("folder", "tar", "parquet")
WORKERS = (0, 2)  # 0: in this process ("1 worker")


# -- the containers ---------------------------------------------------------------------------

def fingerprint(paths: list[str], root: Path) -> str:
    """Names, sizes and mtimes of the JPEGs: the containers are rebuilt when this changes."""
    digest = hashlib.sha256()
    for path in paths:
        info = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def container_root(files: int) -> Path:
    name = f"jpeg_{FOLDER_FILES}_500x375_containers" + ("" if files == FOLDER_FILES else f"_first{files}")
    return DATA / name


def build_tar(paths: list[str], folder: Path, maxcount: int) -> list[str]:
    import webdataset

    folder.mkdir(parents=True)
    with webdataset.ShardWriter(str(folder / "train-%06d.tar"), maxcount=maxcount, verbose=0) as writer:
        for path in paths:
            with open(path, "rb") as file:
                writer.write({"__key__": Path(path).stem, "jpg": file.read()})
    return sorted(str(p) for p in folder.glob("train-*.tar"))


def build_parquet(paths: list[str], folder: Path) -> list[str]:
    import datasets

    datasets.disable_progress_bars()
    cells = []
    for path in paths:
        with open(path, "rb") as file:
            cells.append({"bytes": file.read(), "path": os.path.basename(path)})
    # from_dict with paths + cast_column(Image()) then to_parquet stores the paths only
    # (checked with datasets 5.2): give the bytes themselves.
    dataset = datasets.Dataset.from_dict({"image": cells}, features=datasets.Features({"image": datasets.Image()}))
    folder.mkdir(parents=True)
    written = []
    for index in range(PARQUET_FILES):
        target = folder / f"train-{index:05d}-of-{PARQUET_FILES:05d}.parquet"
        dataset.shard(PARQUET_FILES, index, contiguous=True).to_parquet(str(target))
        written.append(str(target))
    return written


def containers(paths: list[str], folder_root: Path) -> dict:
    """The tar shards and parquet files of ``paths`` (made once; remade if the JPEGs changed)."""
    root = container_root(len(paths))
    manifest_path = root / "manifest.json"
    stamp = fingerprint(paths, folder_root)
    maxcount = math.ceil(len(paths) / SHARDS)
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        files = manifest.get("tar", []) + manifest.get("parquet", [])
        if manifest.get("fingerprint") == stamp and manifest.get("maxcount") == maxcount and files and all(
                (root / name).exists() for name in files):
            return manifest
    print(f"building the tar shards and parquet files of {len(paths)} JPEGs under {root} ...", flush=True)
    if root.exists():
        shutil.rmtree(root)
    building = root.with_name(root.name + ".partial")
    if building.exists():
        shutil.rmtree(building)
    began = time.perf_counter()
    tars = build_tar(paths, building / "wds", maxcount)
    tables = build_parquet(paths, building / "parquet")
    manifest = {
        "fingerprint": stamp,
        "maxcount": maxcount,
        "files": len(paths),
        "tar": [os.path.relpath(p, building) for p in tars],
        "parquet": [os.path.relpath(p, building) for p in tables],
    }
    (building / "manifest.json").write_text(json.dumps(manifest, indent=1))
    os.replace(building, root)
    print(f"built in {time.perf_counter() - began:.1f} s", flush=True)
    return manifest


def check_bytes(paths: list[str], root: Path, manifest: dict) -> None:
    """Every container member holds its JPEG's original bytes, in the folder's order, or abort."""
    import pyarrow.parquet as pq

    expected = []
    for path in paths:
        with open(path, "rb") as file:
            expected.append((Path(path).stem, file.read()))
    got = []
    for name in manifest["tar"]:
        with tarfile.open(root / name) as shard:
            for info in shard:
                got.append((info.name.partition(".")[0], shard.extractfile(info).read()))
    if [k for k, _ in got] != [k for k, _ in expected] or any(a != b for (_, a), (_, b) in zip(got, expected)):
        raise SystemExit("tar shards: members differ from the JPEG files; delete " + str(root) + " and rerun")
    got = []
    for name in manifest["parquet"]:
        for cell in pq.read_table(root / name, columns=["image"]).column("image").to_pylist():
            got.append((Path(cell["path"]).stem, cell["bytes"]))
    if got != expected:
        raise SystemExit("parquet files: image cells differ from the JPEG files; delete " + str(root) + " and rerun")


def tar_pattern(root: Path, manifest: dict) -> str:
    count = len(manifest["tar"])
    return str(root / "wds" / f"train-{{000000..{count - 1:06d}}}.tar")


# -- timing -------------------------------------------------------------------------------------

def signature(stats) -> tuple:
    """What must be equal between sources: files, dtype, channels, and every summary."""
    return stats.files, stats.dtype, stats.channel_names, tuple(stats.channels), stats.pooled


def run_rounds(contenders: dict, rounds: int) -> tuple[dict, dict]:
    """Wall and CPU seconds of every round for each contender (after one warm-up each), and
    the statistics each call returned (its signature), to be compared."""
    results: dict = {name: [] for name in contenders}
    times: dict = {name: [] for name in contenders}
    order = list(contenders)
    for name in order:  # warm-up: page cache, numba, imports
        results[name].append(signature(contenders[name]()))
    for number in range(rounds):
        for name in order if number % 2 == 0 else order[::-1]:
            wall, cpu = time.perf_counter(), cpu_seconds()
            stats = contenders[name]()
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            times[name].append((wall, cpu))
            results[name].append(signature(stats))
        print(f"round {number + 1}/{rounds}: " + ", ".join(f"{s}/{w}w {times[(s, w)][-1][0]:.2f}s" for s, w in order),
              flush=True)
    return times, results


def machine_line() -> str:
    import numpy
    import PIL
    import pyarrow

    versions = [f"Python {platform.python_version()}", f"numpy {numpy.__version__}", f"Pillow {PIL.__version__}",
                f"pyarrow {pyarrow.__version__}"]
    for module in ("simplejpeg", "numba", "datasets", "webdataset", "torch"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except Exception:
            pass
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            model = next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, " + ", ".join(versions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=FOLDER_FILES,
                        help="JPEGs (the first files of the 2,000 folder; fewer than 2,000: the folder source is the list of their paths)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the best of each is kept")
    parser.add_argument("--quick", action="store_true", help="smoke test: 400 files, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.files, args.rounds = min(args.files, 400), 1
    if not 1 <= args.files <= FOLDER_FILES or args.rounds < 1:
        parser.error(f"--files must be 1..{FOLDER_FILES} and --rounds >= 1")

    paths = photo_jpegs(FOLDER_FILES)[: args.files]
    folder_root = Path(paths[0]).parent.parent
    manifest = containers(paths, folder_root)
    root = container_root(len(paths))
    check_bytes(paths, root, manifest)
    print(f"bytes: the {len(paths)} members of {len(manifest['tar'])} tar shards and {len(manifest['parquet'])} "
          "parquet files are the JPEG files' own bytes", flush=True)
    sources = {
        "folder": str(folder_root) if len(paths) == FOLDER_FILES else paths,
        "tar": tar_pattern(root, manifest),
        "parquet": str(root / "parquet" / "*.parquet"),
    }
    labels = {
        "folder": f"folder ({len(paths)} files)" if len(paths) == FOLDER_FILES else f"folder (list of {len(paths)} paths)",
        "tar": f"tar shards ({len(manifest['tar'])}, WebDataset)",
        "parquet": f"parquet ({len(manifest['parquet'])} files, HF Image)",
    }

    # exactness before any timing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reference = signature(imagenorm.compute_stats(sources["folder"], workers=0))
        if reference[0] != len(paths):
            raise SystemExit(f"the folder gave {reference[0]} images, expected {len(paths)}; benchmark aborted")
        for name in ("tar", "parquet"):
            got = signature(imagenorm.compute_stats(sources[name], workers=0))
            if got != reference:
                raise SystemExit(f"{name}: statistics differ from the folder's:\n  {got}\nvs\n  {reference}\nbenchmark aborted")
    print(f"exact: tar shards and parquet give the folder's statistics ({len(paths)} images; "
          f"mean {[round(s.mean, 4) for s in reference[3]]}, std {[round(s.std, 4) for s in reference[3]]})", flush=True)

    contenders = {(name, w): (lambda s=sources[name], w=w: imagenorm.compute_stats(s, workers=w))
                  for w in WORKERS for name in SOURCES}
    with warnings.catch_warnings(record=True) as caught_timed:
        warnings.simplefilter("always")
        times, results = run_rounds(contenders, args.rounds)
    for key, signatures in results.items():
        if any(s != reference for s in signatures):
            raise SystemExit(f"{key}: a timed call gave other statistics than the folder's; benchmark aborted")
    seen = sorted({f"{w.category.__name__}: {w.message}" for w in caught + caught_timed})

    megapixels = sum(c.count for c in reference[3][:1]) / 1e6
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n# containers throughput; {machine_line()}; {started}")
    print(f"# {len(paths)} JPEGs ({megapixels:.0f} megapixels); best (and median) of {args.rounds} interleaved round(s) "
          "after one warm-up call each; every call's statistics equal the folder's")
    print(f"{'source':36s} {'workers':>7s} {'best s':>7s} {'median s':>8s} {'CPU s':>6s} {'images/s':>9s} "
          f"{'x folder':>8s} {'(median)':>8s} {'(CPU)':>6s} {'target':>7s}")
    summary: dict = {"files": len(paths), "rounds": args.rounds, "rows": {}}
    for w in WORKERS:
        folder_best = min(t for t, _ in times[("folder", w)])
        folder_median = statistics.median(t for t, _ in times[("folder", w)])
        folder_cpu = min(c for _, c in times[("folder", w)])
        for name in SOURCES:
            walls = [t for t, _ in times[(name, w)]]
            best, median = min(walls), statistics.median(walls)
            cpu = min(c for _, c in times[(name, w)])
            ratio, ratio_median = folder_best / best, folder_median / median
            verdict = "-" if name == "folder" else ("MET" if ratio >= TARGET else "missed")
            print(f"{labels[name]:36s} {'1 (0)' if w == 0 else str(w):>7s} {best:7.3f} {median:8.3f} {cpu:6.2f} "
                  f"{len(paths) / best:9.1f} {ratio:8.2f} {ratio_median:8.2f} {folder_cpu / cpu:6.2f} "
                  f"{'' if name == 'folder' else f'>={TARGET:.1f}':>7s} {verdict}")
            summary["rows"][f"{name}/{w}"] = {"best_s": best, "median_s": median, "cpu_s": cpu,
                                              "images_per_s": len(paths) / best, "ratio": ratio,
                                              "ratio_median": ratio_median, "ratio_cpu": folder_cpu / cpu}
    met = all(summary["rows"][f"{n}/{w}"]["ratio"] >= TARGET for n in ("tar", "parquet") for w in WORKERS)
    print(f"target (each container >= {TARGET} x folder, 1 and 2 workers, best rounds): {'MET' if met else 'missed'}")
    print("workers '1 (0)': workers=0, measured in this process; x folder = folder seconds / source seconds")
    if seen:
        print("warnings seen:\n  " + "\n  ".join(seen))
    summary["met"], summary["warnings"] = met, seen
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
