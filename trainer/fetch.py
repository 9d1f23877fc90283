"""`python -m trainer fetch`: NWB files and their labels from the Allen Brain Map API and DANDI 000020.

Downloads resume where they stopped (HTTP Range on a `.part` file), retry with back-off on
connection errors and 5xx answers, and are verified against the size and checksum the source
publishes before they take their final name. Only the standard library is used.
"""
import csv
import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ALLEN_API = "http://api.brain-map.org"
CELLS_QUERY = "/api/v2/data/query.json?criteria=model::ApiCellTypesSpecimenDetail,rma::options[num_rows$eq{rows}][start_row$eq{start}]"
NWB_QUERY = ("/api/v2/data/query.json?criteria=model::Specimen,rma::criteria,[id$eq{id}],"
             "rma::include,ephys_result(well_known_files(well_known_file_type[name$eqNWBDownload]))")
CHUNK = 1 << 20
RETRYABLE = (urllib.error.URLError, ConnectionError, TimeoutError, OSError)


class FetchError(RuntimeError):
    """A download or query that failed for good (the message names the URL and the reason)."""


def open_url(url: str, headers: dict | None = None, timeout_s: float = 60.0):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout_s)


def with_retries(action, what: str, retries: int, backoff_s: float):
    """Run action(); on a connection error or an HTTP 5xx retry up to `retries` times with back-off."""
    for attempt in range(retries + 1):
        try:
            return action()
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == retries:
                raise FetchError(f"{what}: HTTP {exc.code} {exc.reason}") from None
        except RETRYABLE as exc:
            if attempt == retries:
                raise FetchError(f"{what}: {type(exc).__name__}: {exc} (after {retries + 1} attempts)") from None
        time.sleep(backoff_s * 2 ** attempt)


def get_json(url: str, retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 60.0) -> dict:
    def action():
        with open_url(url, timeout_s=timeout_s) as r:
            return json.loads(r.read())

    return with_retries(action, url, retries, backoff_s)


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, size: int | None, sha256: str | None, md5: str | None) -> str | None:
    """None when the file matches what the source published, else the mismatch."""
    if size is not None and path.stat().st_size != size:
        return f"size {path.stat().st_size} bytes, expected {size}"
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected and file_digest(path, algorithm) != expected.lower():
            return f"{algorithm} mismatch"
    return None


def download(url: str, dest: Path, size: int | None = None, sha256: str | None = None, md5: str | None = None,
             retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 60.0, progress=None) -> bool:
    """Fetch url into dest, resuming a previous `.part`; returns False when dest was already complete.

    progress: optional callable(bytes_added). Raises FetchError after the retries, or when the
    finished file does not match size / checksum (the bad file is removed so that the next run
    starts over).
    """
    dest = Path(dest)
    if dest.exists() and verify(dest, size, sha256, md5) is None:
        return False
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)

    def attempt():
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset == size:
            return
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            r = open_url(url, headers, timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing left to send: the part is whole
                return
            raise
        with r:
            append = offset and r.status == 206  # a 200 means the server ignored the range
            with open(part, "ab" if append else "wb") as f:
                for block in iter(lambda: r.read(CHUNK), b""):
                    f.write(block)
                    if progress:
                        progress(len(block))
            expected = r.headers.get("Content-Length")
        if expected is not None and part.stat().st_size < (offset if append else 0) + int(expected):
            raise ConnectionError(f"connection closed after {part.stat().st_size} bytes")

    with_retries(attempt, url, retries, backoff_s)
    problem = verify(part, size, sha256, md5)
    if problem:
        part.unlink()
        raise FetchError(f"{url}: downloaded file does not match the source ({problem}); removed, run again")
    os.replace(part, dest)
    return True


# ---- Allen Cell Types Database ----

def allen_cells(base: str = ALLEN_API, page: int = 2000, **kw) -> list[dict]:
    """Every cell of the Cell Types Database (ApiCellTypesSpecimenDetail rows), page by page."""
    rows, start = [], 0
    while True:
        answer = get_json(base + CELLS_QUERY.format(rows=page, start=start), **kw)
        if not answer.get("success", False):
            raise FetchError(f"{base}: cell query failed: {answer.get('msg')}")
        batch = answer["msg"]
        rows.extend(batch)
        start += len(batch)
        if not batch or len(batch) < page or start >= int(answer.get("total_rows", start)):
            return rows


def allen_nwb_url(specimen_id: int, base: str = ALLEN_API, **kw) -> str:
    answer = get_json(base + NWB_QUERY.format(id=specimen_id), **kw)
    try:
        link = answer["msg"][0]["ephys_result"]["well_known_files"][0]["download_link"]
    except (KeyError, IndexError, TypeError):
        raise FetchError(f"specimen {specimen_id}: no NWB file listed by {base}") from None
    return urllib.parse.urljoin(base, link)


def fetch_allen(out_dir: Path, base: str = ALLEN_API, species: str = "Mus musculus", limit: int | None = None,
                progress=None, page: int = 2000, **kw) -> dict:
    """cells.csv (cell_id = specimen id, line_name, dendrite_type, ...) and <specimen_id>.nwb in out_dir.

    kw: retries, backoff_s, timeout_s of every request.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = [c for c in allen_cells(base, page, **kw) if not species or c.get("donor__species") == species]
    cells = cells[:limit] if limit else cells
    with open(out_dir / "cells.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell_id", "line_name", "dendrite_type", "structure", "layer"])
        for c in cells:
            w.writerow([c["specimen__id"], c.get("line_name") or "", c.get("tag__dendrite_type") or "",
                        c.get("structure__acronym") or "", c.get("structure__layer") or ""])
    return fetch_each([(str(c["specimen__id"]), lambda c=c: allen_nwb_url(c["specimen__id"], base, **kw), None, None,
                        None) for c in cells], out_dir, progress, **kw)


# ---- DANDI 000020 (Allen patch-seq) ----

def dandi_files(manifest_csv: Path) -> list[dict]:
    with open(manifest_csv, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("file_type") == "nwb"]


def fetch_dandi(manifest_csv: Path, metadata_csv: Path, out_dir: Path, limit: int | None = None, progress=None,
                **kw) -> dict:
    """The NWB files listed in the 000020 manifest (size and sha256 checked) and labels.csv for them."""
    from trainer.build import patchseq_label_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = dandi_files(manifest_csv)
    rows = rows[:limit] if limit else rows
    patchseq_label_table(Path(metadata_csv), Path(manifest_csv), out_dir / "labels.csv")
    jobs = [(Path(r["file_name"]).stem, lambda r=r: r["archive_uri"], int(r["file_size"]), r["sha256_checksum"],
             r.get("md5_checksum")) for r in rows]
    return fetch_each(jobs, out_dir, progress, **kw)


def fetch_each(jobs, out_dir: Path, progress, **kw) -> dict:
    """Download (name, url_fn, size, sha256, md5) jobs to out_dir/name.nwb; failures are listed, not fatal."""
    summary = {"downloaded": 0, "already_complete": 0, "failed": {}}
    for name, url_fn, size, sha256, md5 in jobs:
        try:
            fresh = download(url_fn(), out_dir / f"{name}.nwb", size, sha256, md5, progress=progress, **kw)
            summary["downloaded" if fresh else "already_complete"] += 1
        except FetchError as exc:
            summary["failed"][name] = str(exc)
    return summary
