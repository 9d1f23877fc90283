"""The fetch clients against a real HTTP server on loopback serving responses of the sources' shape.

The server plays the Allen Brain Map API (paged RMA cell query, per-specimen NWB link query,
well-known-file downloads) and a DANDI-like file store, and misbehaves on purpose: it drops a
connection half-way through a file (the client must resume with a Range request), answers 503
once (the client must retry), and serves one file whose bytes do not match the published
checksum (the client must refuse it).
"""
import csv
import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from trainer.fetch import FetchError, download, fetch_allen, fetch_dandi

FILES = {f"/files/{k}": (f"NWB-{k}-".encode() * 5000) for k in range(4)}  # ~35 kB each


class Recorder:
    def __init__(self):
        self.requests = []  # (path, Range header)
        self.drop_once = {"/files/1", "/api/v2/well_known_file_download/102"}  # cut after half the bytes
        self.fail_once = {"/files/2"}  # 503 first
        self.corrupt = {"/files/3"}  # bytes differ from the checksum


def make_handler(rec: Recorder, cells: list[dict]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send_json(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            rec.requests.append((self.path, self.headers.get("Range")))
            path = urllib.parse.unquote(self.path)
            if path.startswith("/api/v2/data/query.json"):
                return self.query(path)
            if path.startswith("/api/v2/well_known_file_download/"):
                return self.send_file(path, FILES[f"/files/{int(path.rsplit('/', 1)[1]) - 100}"])
            if path in FILES:
                return self.send_file(path, FILES[path])
            self.send_error(404)

        def query(self, path):
            if "ApiCellTypesSpecimenDetail" in path:  # paged: num_rows / start_row
                rows = int(path.split("num_rows$eq")[1].split("]")[0])
                start = int(path.split("start_row$eq")[1].split("]")[0])
                return self.send_json({"success": True, "id": 0, "start_row": start, "num_rows": rows,
                                       "total_rows": len(cells), "msg": cells[start:start + rows]})
            specimen = int(path.split("[id$eq")[1].split("]")[0])
            return self.send_json({"success": True, "total_rows": 1, "msg": [{"id": specimen, "ephys_result": {
                "well_known_files": [{"download_link": f"/api/v2/well_known_file_download/{100 + specimen % 10}"}]}}]})

        def send_file(self, key, data):
            if key in rec.fail_once:
                rec.fail_once.discard(key)
                return self.send_error(503, "busy")
            if key in rec.corrupt:
                data = data[:-1] + b"X"
            start = 0
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    return self.send_error(416)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if key in rec.drop_once:
                rec.drop_once.discard(key)
                self.wfile.write(data[start:start + (len(data) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data[start:])

    return Handler


@pytest.fixture
def server():
    cells = [{"specimen__id": 1000 + k, "line_name": line, "tag__dendrite_type": dend, "donor__species": sp,
              "structure__acronym": "VISp", "structure__layer": "5"}
             for k, (line, dend, sp) in enumerate([("Rorb-IRES2-Cre", "spiny", "Mus musculus"),
                                                    ("Pvalb-IRES-Cre", "aspiny", "Mus musculus"),
                                                    ("", "spiny", "Homo Sapiens"),
                                                    ("Sst-IRES-Cre", "aspiny", "Mus musculus")])]
    rec = Recorder()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(rec, cells))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", rec
    httpd.shutdown()
    httpd.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    base, rec = server
    data = FILES["/files/1"]
    assert download(f"{base}/files/1", tmp_path / "a.nwb", len(data), sha(data), backoff_s=0.01)
    assert (tmp_path / "a.nwb").read_bytes() == data and not (tmp_path / "a.part").exists()
    ranges = [r for p, r in rec.requests if p == "/files/1"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(data) // 2}-"  # resumed, not restarted
    # a second run finds the file complete and asks the server for nothing
    n = len(rec.requests)
    assert not download(f"{base}/files/1", tmp_path / "a.nwb", len(data), sha(data))
    assert len(rec.requests) == n


def test_retries_after_a_server_error_and_refuses_a_bad_checksum(server, tmp_path):
    base, rec = server
    data = FILES["/files/2"]
    assert download(f"{base}/files/2", tmp_path / "b.nwb", len(data), sha(data), backoff_s=0.01)
    assert [p for p, _ in rec.requests].count("/files/2") == 2
    bad = FILES["/files/3"]
    with pytest.raises(FetchError, match="sha256 mismatch"):
        download(f"{base}/files/3", tmp_path / "c.nwb", len(bad), sha(bad), backoff_s=0.01)
    assert not (tmp_path / "c.nwb").exists() and not (tmp_path / "c.nwb.part").exists()
    with pytest.raises(FetchError, match="HTTP 404"):
        download(f"{base}/files/none", tmp_path / "d.nwb", backoff_s=0.01)


def test_allen_cell_list_is_paged_and_files_are_fetched(server, tmp_path):
    base, rec = server
    summary = fetch_allen(tmp_path, base, page=2, backoff_s=0.01)
    assert summary == {"downloaded": 3, "already_complete": 0, "failed": {}}
    with open(tmp_path / "cells.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["cell_id"] for r in rows] == ["1000", "1001", "1003"]  # the human cell left out
    assert rows[1]["line_name"] == "Pvalb-IRES-Cre" and rows[1]["dendrite_type"] == "aspiny"
    assert (tmp_path / "1001.nwb").read_bytes() == FILES["/files/1"]  # its download was cut and resumed
    assert sum("ApiCellTypesSpecimenDetail" in p for p, _ in rec.requests) == 2  # 2 pages of 2 = total_rows
    again = fetch_allen(tmp_path, base, page=10, backoff_s=0.01)
    assert again["already_complete"] == 3 and again["downloaded"] == 0


def test_dandi_manifest_download_with_labels(server, tmp_path):
    base, rec = server
    manifest, metadata = tmp_path / "manifest.csv", tmp_path / "metadata.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_id", "file_name", "file_size", "sha256_checksum", "md5_checksum", "technique", "file_type",
                    "archive", "archive_uri", "project", "cell_specimen_id"])
        for k, cell in ((0, "11"), (3, "12")):
            data = FILES[f"/files/{k}"]
            w.writerow([k, f"sub-{k}_ses-{k}_icephys.nwb", len(data), sha(data), hashlib.md5(data).hexdigest(),
                        "intracellular_electrophysiology", "nwb", "DANDI", f"{base}/files/{k}", "p", cell])
        w.writerow([9, "11.marker", 10, "x", "y", "morphology", "marker_swc", "BIL", f"{base}/nothing", "p", "11"])
    with open(metadata, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell_specimen_id", "full_genotype", "dendrite_type"])
        w.writerows([["11", "Vip-IRES-Cre/wt;Ai14(RCL-tdT)/wt", "aspiny"], ["12", "Sst-IRES-Cre/wt", "aspiny"]])
    out = tmp_path / "dandi"
    summary = fetch_dandi(manifest, metadata, out, backoff_s=0.01)
    assert summary["downloaded"] == 1 and list(summary["failed"]) == ["sub-3_ses-3_icephys"]  # the corrupt one
    assert "sha256 mismatch" in summary["failed"]["sub-3_ses-3_icephys"]
    with open(out / "labels.csv", newline="") as f:
        labels = {r["file"]: r["line_name"] for r in csv.DictReader(f)}
    assert labels["sub-0_ses-0_icephys.nwb"].startswith("Vip-IRES-Cre")


def test_fetch_cli_reports_failures_and_exits_nonzero(server, tmp_path):
    base, _ = server
    from trainer.__main__ import main

    result = CliRunner().invoke(main, ["fetch", "allen", "--out", str(tmp_path), "--base", base + "/nowhere",
                                       "--retries", "0"])
    assert result.exit_code != 0 and "HTTP 404" in result.output
