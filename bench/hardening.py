"""Fault-and-abuse bench for the search service and the CLI (issue 13).

Runs a real `hetsearch serve` process over a small synthetic index and
1. sends it malformed and hostile requests (pixel bombs such as a 1x39,000,000 PNG, the largest
   accepted images alone and 8 at once, 16-bit and float images, broken multipart bodies, odd item
   ids, oversized bodies, ...), each with the status it must get, while a thread samples the
   server's resident memory (VmRSS, every 10 ms; VmHWM at the end);
2. adds, removes and rebuilds the served index while client threads search without pause, and
   counts requests that failed (reload_dropped_requests);
3. fuzzes the HTTP API from its OpenAPI schema with Schemathesis (in-process, `hetsearch.serve.fuzz`);
4. damages copies of the index in every way of `DAMAGES` in tests/index_fixtures.py and runs
   `hetsearch query` and `hetsearch index check` on each, plus bad CLI inputs (config values, a
   crafted checkpoint_last.pt, a PNG given as a model): a clean error is exit code 2 (1 for
   `index check`), no traceback, one line naming the file.

Writes docs/results/hardening.{json,md}. Usage: python bench/hardening.py [--fuzz-examples 40]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hetsearch.index import add_items, build_index, folder_items, rebuild_index, remove_items  # noqa: E402
sys.path.insert(0, str(ROOT / "tests"))  # the tests' tiny models and damaged-index recipes
from index_fixtures import DAMAGES, make_tiny_models, raw_png, write_image_folder  # noqa: E402
from hetsearch.models import load_checkpoint  # noqa: E402
from hetsearch.utils.results import git_revision, markdown_table, write_results  # noqa: E402

RSS_LIMIT_GB = 2.5


# ---------------------------------------------------------------- payloads


def encoded(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def attack_cases(valid_png: bytes) -> list[tuple[str, dict, set[int]]]:
    """(name, httpx request kwargs, accepted statuses)."""
    def upload(data: bytes, k: str = "5", name: str = "q.png") -> dict:
        return {"method": "POST", "url": "/search", "files": {"file": (name, data, "image/png")}, "data": {"k": k}}

    big_jpeg = encoded(np.zeros((6000, 6000, 3), np.uint8), "JPEG", quality=80)
    cases = [
        ("1x1,000,000 PNG", upload(raw_png(1, 1_000_000)), {413}),
        ("1x39,000,000 PNG", upload(raw_png(1, 39_000_000)), {413}),
        ("39,000,000x1 PNG", upload(raw_png(39_000_000, 1)), {413}),
        ("10,000x100 PNG (aspect 100:1)", upload(raw_png(10_000, 100)), {413}),
        ("20,000x20,000 PNG", upload(raw_png(20_000, 20_000)), {413}),
        ("7,000x7,000 PNG (49 MP)", upload(raw_png(7_000, 7_000)), {413}),
        ("16,384x2,441 grey PNG (40 MP, accepted)", upload(raw_png(16_384, 2_441)), {200}),
        ("6,324x6,324 RGBA PNG (40 MP, accepted)", upload(raw_png(6_324, 6_324, 8, 6)), {200}),
        ("6,000x6,000 JPEG (36 MP, accepted)", upload(big_jpeg, name="q.jpg"), {200}),
        ("16-bit RGB PNG", upload(raw_png(64, 64, 16, 2)), {415}),
        ("16-bit grey PNG", upload(encoded(np.full((32, 32), 40000, np.uint16), "PNG")), {415}),
        ("float TIFF", upload(encoded(np.ones((8, 8), np.float32), "TIFF"), name="q.tif"), {415}),
        ("empty file", upload(b""), {400}),
        ("truncated PNG", upload(valid_png[: len(valid_png) // 2]), {400}),
        ("text file", upload(b"hello, not an image"), {415}),
        ("HTML file", upload(b"<html><script>alert(1)</script></html>", name="x.html"), {415}),
        ("SVG file", upload(b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', name="x.svg"), {415}),
        ("PNG signature and header only", upload(valid_png[:33]), {400, 415}),
        ("50 MB body", upload(b"\x89PNG" + os.urandom(1024) * (50 * 1024)), {413}),
        ("k=0", upload(valid_png, k="0"), {422}),
        ("k=-1", upload(valid_png, k="-1"), {422}),
        ("k=101 (over --max-k)", upload(valid_png, k="101"), {422}),
        ("k=abc", upload(valid_png, k="abc"), {422}),
        ("k=1e9", upload(valid_png, k="1e9"), {422}),
        ("no file field", {"method": "POST", "url": "/search", "data": {"k": "3"}}, {422}),
        ("file as a text field", {"method": "POST", "url": "/search", "data": {"file": "x", "k": "3"}}, {422}),
        ("JSON body", {"method": "POST", "url": "/search", "json": {"k": 3}}, {422}),
        ("multipart without boundary", {"method": "POST", "url": "/search", "content": b"--x\r\n",
                                        "headers": {"content-type": "multipart/form-data"}}, {400, 422}),
        ("bad Content-Length", {"raw": b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n"
                                       b"Content-Type: multipart/form-data; boundary=x\r\n\r\nabc"}, {400}),
        ("Content-Length lies (says 10 MB, sends 3 bytes)", {"raw": b"POST /search HTTP/1.1\r\nHost: x\r\n"
                                                             b"Content-Length: 10000000\r\nContent-Type: multipart/"
                                                             b"form-data; boundary=x\r\n\r\nabc", "close": True},
         {None, 400, 413, 422}),
        ("valid search", upload(valid_png), {200}),
        ("item 9223372036854775808", {"method": "GET", "url": "/items/9223372036854775808"}, {404}),
        ("item 99999999999999999999", {"method": "GET", "url": "/items/99999999999999999999"}, {422}),
        ("item -99999999999999999999", {"method": "GET", "url": "/items/-99999999999999999999"}, {422}),
        ("item 1.0", {"method": "GET", "url": "/items/1.0"}, {422}),
        ("item +5", {"method": "GET", "url": "/items/+5"}, {422}),
        ("item -1 image", {"method": "GET", "url": "/items/-1/image"}, {422}),
        ("item ../../etc/passwd", {"method": "GET", "url": "/items/..%2F..%2Fetc%2Fpasswd/image"}, {404, 422}),
        ("item 9223372036854775808 image", {"method": "GET", "url": "/items/9223372036854775808/image"}, {404}),
        ("item 3", {"method": "GET", "url": "/items/3"}, {200}),
        ("item 3 image", {"method": "GET", "url": "/items/3/image"}, {200}),
        ("GET /search", {"method": "GET", "url": "/search"}, {405}),
        ("DELETE /items/3", {"method": "DELETE", "url": "/items/3"}, {405}),
        ("unknown path", {"method": "GET", "url": "/admin"}, {404}),
        ("static path traversal", {"method": "GET", "url": "/static/../app.py"}, {404}),
        ("/docs", {"method": "GET", "url": "/docs"}, {200}),
        ("/openapi.json", {"method": "GET", "url": "/openapi.json"}, {200}),
    ]
    return cases


# ---------------------------------------------------------------- server process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.01):
        super().__init__(daemon=True)
        self.pid, self.every_s, self.peak, self.stop_event = pid, every_s, 0, threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))
            time.sleep(self.every_s)


def start_server(index: Path, query_model: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen([sys.executable, "-m", "hetsearch.cli", "serve", "--index", str(index), "--query-model",
                             str(query_model), "--port", str(port), "--reload-interval", "0.2", "--max-k", "100"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def wait_ready(client, server: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.time() + 180
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.3)


# ---------------------------------------------------------------- phases


def raw_request(base: str, data: bytes, close: bool = False) -> tuple[int | None, str]:
    """Send bytes as they are (requests an HTTP client refuses to form); (status, first line).
    ``close``: half-close after sending (a body shorter than its Content-Length); None: no answer."""
    host, port = base.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        if close:
            sock.shutdown(socket.SHUT_WR)
        try:
            answer = sock.recv(4096).decode("latin-1")
        except (socket.timeout, ConnectionError):
            return None, "no answer"
    first = answer.split("\r\n", 1)[0]
    parts = first.split()
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None), answer[-160:]


def run_attacks(client, cases) -> tuple[list[dict], int, int]:
    import httpx

    rows, sent, server_5xx = [], 0, 0
    for name, request, accepted in cases:
        started = time.perf_counter()
        try:
            if "raw" in request:
                status, detail = raw_request(str(client.base_url).rstrip("/"), request["raw"], request.get("close", False))
            else:
                response = client.request(**request)
                status, detail = response.status_code, response.text[:160]
        except httpx.HTTPError as exc:
            status, detail = None, f"{type(exc).__name__}: {exc}"
        sent += 1
        server_5xx += int(status is not None and status >= 500)
        healthy = client.get("/health").status_code == 200
        sent += 1
        rows.append({"case": name, "status": status,
                     "expected": "/".join(sorted(("no answer" if a is None else str(a)) for a in accepted)),
                     "ok": status in accepted and healthy, "ms": int(round((time.perf_counter() - started) * 1e3)),
                     "detail": detail if status != 200 else ""})
    return rows, sent, server_5xx


def run_burst(base: str, data: bytes, n: int, accepted: int) -> tuple[int, int, int]:
    """``n`` uploads at once; (sent, 5xx, answers with the accepted status)."""
    import httpx

    statuses = []

    def one():
        with httpx.Client(base_url=base, timeout=300) as client:
            try:
                statuses.append(client.post("/search", files={"file": ("q.png", data, "image/png")},
                                            data={"k": "3"}).status_code)
            except httpx.HTTPError:
                statuses.append(None)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return n, sum(s is not None and s >= 500 for s in statuses), sum(s == accepted for s in statuses)


def run_reload(base: str, index: Path, gallery_path: Path, work: Path, valid_png: bytes, clients: int = 3) -> dict:
    import httpx

    stop, lock = threading.Event(), threading.Lock()
    counts = {"requests": 0, "dropped": 0, "errors": []}

    def loop():
        with httpx.Client(base_url=base, timeout=60) as client:
            while not stop.is_set():
                problem = None
                try:
                    response = client.post("/search", files={"file": ("q.png", valid_png, "image/png")},
                                           data={"k": "5"})
                    if response.status_code != 200:
                        problem = f"search {response.status_code}"
                    else:
                        hit = response.json()["results"][0]
                        item = client.get(f"/items/{hit['id']}")
                        with lock:
                            counts["requests"] += 1
                        if item.status_code not in (200, 404):  # 404: removed since the search
                            problem = f"item {item.status_code}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                with lock:
                    counts["requests"] += 1
                    if problem:
                        counts["dropped"] += 1
                        counts["errors"].append(problem)

    def wait_for(revision: int) -> None:
        deadline = time.time() + 120
        while httpx.get(f"{base}/health", timeout=60).json()["index"]["revision"] != revision:
            if time.time() > deadline:
                raise RuntimeError(f"revision {revision} never served")
            time.sleep(0.05)

    gallery = load_checkpoint(gallery_path)
    write_image_folder(work / "more", n=40, seed=11)
    workers = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    time.sleep(1.0)
    revision = httpx.get(f"{base}/health", timeout=60).json()["index"]["revision"]
    writes = []
    for op in ("add", "remove", "rebuild hnsw", "rebuild flat", "remove"):
        if op == "add":
            add_items(index, gallery, folder_items(work / "more", 1, 16))
        elif op == "remove":
            ids = [int(i) for i in np.load(index / "ids.npy")[:5]]
            remove_items(index, ids=ids)
        else:
            rebuild_index(index, op.split()[1], {"M": 8} if op.endswith("hnsw") else None)
        revision += 1
        wait_for(revision)
        writes.append(op)
        time.sleep(0.5)
    stop.set()
    for worker in workers:
        worker.join(timeout=60)
    return {"requests": counts["requests"], "dropped": counts["dropped"], "errors": counts["errors"][:10],
            "writes": writes, "seconds": round(time.perf_counter() - started, 1)}


def cli(args: list[str], cwd: Path = ROOT) -> tuple[int, str, str]:
    env = dict(os.environ, COLUMNS="120", PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-m", "hetsearch.cli", *args], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=600)
    return out.returncode, out.stdout, out.stderr


def clean(code: int, err: str, must_name: str, codes=(2,)) -> bool:
    """The expected exit code, no traceback, and the failure told in 'error:'/'damaged:' lines (one per
    problem, unwrapped) that name ``must_name``; informational lines before them are allowed."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "damaged:"))]
    return code in codes and "Traceback" not in err and bool(errors) and any(must_name in line for line in errors) \
        and lines[-len(errors):] == errors


def run_damaged(index: Path, models, image: Path, work: Path) -> list[dict]:
    rows = []
    for name, (damage, file, at_open) in DAMAGES.items():
        folder = work / "damaged" / name.replace(" ", "_")
        shutil.copytree(index, folder)
        damage(folder)
        row = {"case": name, "file": file}
        if at_open:
            code, out, err = cli(["query", "--index", str(folder), "--query-model", str(models.query), str(image)])
            row["query_clean"] = clean(code, err, file)
            row["query_error"] = err.strip()[:200]
        code, out, err = cli(["index", "check", "--index", str(folder)])
        row["check_clean"] = clean(code, err, file, codes=(1, 2))
        row["clean"] = row["check_clean"] and row.get("query_clean", True)
        rows.append(row)
    return rows


def run_bad_cli(models, image: Path, work: Path) -> list[dict]:
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    run_dir = work / "runs" / "evil"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoint_last.pt").write_bytes(pickle.dumps({"x": Evil()}))
    tiny = [f"output_dir={work / 'runs'}", "data.max_train_items=600", "data.max_test_items=200", "train.epochs=1",
            "runtime.progress=false", "runtime.device=cpu"]
    cases = [
        ("train.lr=-1", ["train", "configs/fashion_mnist/gallery.yaml", "train.lr=-1", *tiny], "train.lr"),
        ("train.batch_size=0", ["train", "configs/fashion_mnist/gallery.yaml", "train.batch_size=0", *tiny],
         "train.batch_size"),
        ("model.embedding_dim=-5", ["train", "configs/fashion_mnist/gallery.yaml", "model.embedding_dim=-5", *tiny],
         "model.embedding_dim"),
        ("crafted checkpoint_last.pt on --resume", ["train", "configs/fashion_mnist/gallery.yaml", *tiny, "name=evil",
                                                    "--resume"], "checkpoint_last.pt"),
        ("PNG as gallery model", ["index", "build", "--gallery-model", str(image), "--images", str(image.parent),
                                  "--out", str(work / "x")], image.name),
        ("PNG as query model", ["query", "--index", str(work / "idx"), "--query-model", str(image), str(image)],
         image.name),
        ("missing index folder", ["query", "--index", str(work / "nope"), "--query-model", str(models.query),
                                  str(image)], "nope"),
        ("random query model claiming compatibility (verify)", ["verify", "--index", str(work / "idx"),
                                                                "--query-model", str(models.query)], "near chance"),
    ]
    rows = []
    for name, args, must_name in cases:
        code, out, err = cli(args)
        rows.append({"case": name, "clean": clean(code, err, must_name) and "pwned" not in out + err,
                     "error": err.strip()[:200]})
    return rows


def _markdown(payload: dict, figures: dict) -> str:
    return "\n".join([
        "# Hardening: the service and the CLI under malformed and hostile input", "",
        f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']}  ",
        f"Git revision: {payload['git_revision']}", "",
        "Protocol: " + "; ".join(f"{k}: {v}" for k, v in payload["protocol"].items()), "",
        markdown_table([{"figure": k, "value": v if not isinstance(v, list) else ", ".join(v)}
                        for k, v in figures.items()], ["figure", "value"]), "",
        "## Requests to the live server", "",
        markdown_table(payload["requests"], ["case", "status", "expected", "ok", "ms"]), "",
        markdown_table(payload["bursts"], ["case", "sent", "expected", "answered_as_expected"]), "",
        "## Damaged index folders (`hetsearch query` and `hetsearch index check`)", "",
        markdown_table(payload["damaged"], ["case", "file", "query_clean", "check_clean", "query_error"]), "",
        "## Bad CLI input", "", markdown_table(payload["bad_cli"], ["case", "clean", "error"]), "",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in payload["timings_s"].items()), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz-examples", type=int, default=40, help="Schemathesis requests per operation and mode")
    parser.add_argument("--name", default="hardening")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--server-only", action="store_true", help="skip fuzzing and the CLI cases (quick check)")
    args = parser.parse_args()
    revision = git_revision(ROOT)   # the code measured: taken before the run, in case the checkout changes meanwhile
    import httpx
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="hetsearch-hardening-"))
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        models = make_tiny_models(work / "models")
        paths = write_image_folder(work / "imgs", n=200)
        build_index(work / "idx", load_checkpoint(models.gallery), folder_items(work / "imgs", 1, 16))
        valid_png = paths[0].read_bytes()
        timings["setup"] = round(time.perf_counter() - started, 1)

        # 1 + 2: a live server: attacks, bursts, reload under load
        port, log = free_port(), work / "server.log"
        served = work / "served"
        shutil.copytree(work / "idx", served)
        server = start_server(served, models.query, port, log)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=300) as client:
                wait_ready(client, server, log)
                rss_start = proc_status(server.pid, "VmRSS")
                sampler = RssSampler(server.pid)
                sampler.start()
                started = time.perf_counter()
                rows, sent, server_5xx = run_attacks(client, attack_cases(valid_png))
                bursts = []
                for name, data, accepted in (("8 x 40 MP RGBA PNG at once", raw_png(6_324, 6_324, 8, 6), 200),
                                             ("8 x 1x39,000,000 PNG at once", raw_png(1, 39_000_000), 413)):
                    n, errors, ok = run_burst(base, data, 8, accepted)
                    sent, server_5xx = sent + n, server_5xx + errors
                    bursts.append({"case": name, "sent": n, "expected": accepted, "answered_as_expected": ok})
                timings["attacks"] = round(time.perf_counter() - started, 1)
                started = time.perf_counter()
                reload = run_reload(base, served, models.gallery, work, valid_png)
                sent += reload["requests"]
                timings["reload_under_load"] = round(time.perf_counter() - started, 1)
                sampler.stop_event.set()
                sampler.join()
                peak = max(sampler.peak, proc_status(server.pid, "VmHWM"))
                alive = server.poll() is None and client.get("/health").status_code == 200
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=30)

        # 3: schema-driven fuzzing (in-process, same index)
        from hetsearch.export.encoders import TorchEncoder
        from hetsearch.index import open_index
        from hetsearch.serve.app import create_app
        from hetsearch.serve.fuzz import fuzz_app

        if args.server_only:
            print(json.dumps({"requests_sent": sent, "server_5xx": server_5xx, "peak_gb": round(peak / 1e9, 3),
                              "start_gb": round(rss_start / 1e9, 3), "bad": [r for r in rows if not r["ok"]],
                              "bursts": bursts, "reload": reload}, indent=1))
            return
        started = time.perf_counter()
        query = load_checkpoint(models.query)
        app = create_app(open_index(work / "idx", query_meta=query.meta), TorchEncoder(query.model, query.meta),
                         offload=False)
        fuzz = fuzz_app(app, examples=args.fuzz_examples)
        timings["fuzz"] = round(time.perf_counter() - started, 1)

        # 4: damaged indexes and bad CLI input
        started = time.perf_counter()
        damaged = run_damaged(work / "idx", models, paths[0], work)
        bad_cli = run_bad_cli(models, paths[0], work)
        timings["cli_cases"] = round(time.perf_counter() - started, 1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    figures = {
        "requests_sent": sent,
        "server_5xx": server_5xx + fuzz.server_errors,
        "unexpected_status": sum(not r["ok"] for r in rows) + sum(b["answered_as_expected"] != b["sent"]
                                                                    for b in bursts),
        "server_alive_after_run": alive,
        "server_rss_gb_at_start": round(rss_start / 1e9, 3),
        "max_server_rss_gb_during_run": round(peak / 1e9, 3),
        "rss_limit_gb": RSS_LIMIT_GB,
        "damaged_index_cases": len(damaged),
        "clean_errors": sum(r["clean"] for r in damaged),
        "bad_cli_cases": len(bad_cli),
        "bad_cli_clean_errors": sum(r["clean"] for r in bad_cli),
        "fuzz_cases": fuzz.sent,
        "fuzz_5xx": fuzz.server_errors,
        "reload_requests": reload["requests"],
        "reload_dropped_requests": reload["dropped"],
        "reload_writes": reload["writes"],
    }
    protocol = {"server": "hetsearch serve (1 process, uvicorn, default thread pool), tiny synthetic index of 200 "
                          "16x16 images, torch query model, --max-upload-mb 10, --max-k 100, --reload-interval 0.2",
                "memory": "server VmRSS sampled every 10 ms + VmHWM at the end, GB = 1e9 bytes",
                "fuzz": f"Schemathesis {args.fuzz_examples} examples per operation and mode (positive, negative), "
                        "in-process ASGI",
                "reload": "3 client threads search + fetch an item in a loop while the index gets add, remove, "
                          "rebuild hnsw, rebuild flat, remove; a request is dropped on a transport error or an "
                          "unexpected status",
                "clean error": "exit code 2 (index check: 1), no traceback, stderr ends with one unwrapped "
                               "'error:' line (index check: one 'damaged:' line per problem) naming the file"}
    # rows: none (no query/gallery model pair is scored here); the request cases are under "requests"
    write_results(args.name, protocol=protocol, rows=[], timings_s=timings, results_dir=ROOT / "docs" / "results",
                  extra={"git_revision": revision, **figures, "requests": rows, "bursts": bursts, "damaged": damaged,
                         "bad_cli": bad_cli, "fuzz": fuzz.to_dict(), "reload": reload},
                  markdown=lambda payload: _markdown(payload, figures))
    print(json.dumps(figures, indent=2))
    failed = [k for k, bad in (("server_5xx", figures["server_5xx"]), ("unexpected_status", figures["unexpected_status"]),
                               ("reload_dropped_requests", figures["reload_dropped_requests"]),
                               ("rss", figures["max_server_rss_gb_during_run"] > RSS_LIMIT_GB),
                               ("damaged", figures["clean_errors"] != figures["damaged_index_cases"]),
                               ("cli", figures["bad_cli_clean_errors"] != figures["bad_cli_cases"])) if bad]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
