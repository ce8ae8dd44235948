"""Load test of `cadmr serve` on 127.0.0.1: throughput, latency and errors under a bounded
mixed load. Stops by itself.

    .venv/bin/python benchmarks/serve_load.py [--dataset lfm2k] [--models ease lightgcn cadmr]
        [--seconds 20] [--clients 16] [--checkpoint MODEL=PATH ...]

For each model it trains a short run (or takes ``--checkpoint``), starts the server in this
process on a free loopback port, and lets ``--clients`` threads send requests for
``--seconds``: 70 % ``GET /recommend`` for a random user, 25 % ``POST /recommend`` for 16
random users, 5 % malformed (unknown user, k=0, broken JSON), each client waiting for its
answer before the next. It prints requests/s, p50/p95/p99 latency per request kind and the
count of each status. Expected statuses for the malformed ones are 404/422; any 5xx or
connection error is a failure.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import uvicorn

import cadmr
from cadmr.data.sources import resolve_dataset
from cadmr.serve import create_app, describe_checkpoint
from cadmr.train.checkpoint import load_checkpoint, load_model

QUICK = {  # short training runs: the benchmark measures serving, not accuracy
    "ease": {},
    "lightgcn": {"train": {"epochs": 5}},
    "cadmr": {"train": {"epochs": 3}},
    "kernel_ae": {"train": {"epochs": 3}},
    "bpr": {"train": {"epochs": 5}},
}


def start(checkpoint: Path, dataset) -> tuple[uvicorn.Server, threading.Thread, str]:
    model, _ = load_model(checkpoint, dataset)
    meta = describe_checkpoint(checkpoint, load_checkpoint(checkpoint), dataset)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(model, dataset, meta), log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def one_request(url: str, rng: random.Random, n_users: int) -> tuple[str, int]:
    """Send one request of a random kind; returns (kind, status), status 0 = no answer."""
    r = rng.random()
    if r < 0.70:
        kind, req = (
            "GET one",
            urllib.request.Request(f"{url}/recommend?user={rng.randrange(n_users)}&k=10"),
        )
    elif r < 0.95:
        body = json.dumps({"users": [rng.randrange(n_users) for _ in range(16)], "k": 10})
        kind, req = (
            "POST 16",
            urllib.request.Request(
                f"{url}/recommend", body.encode(), {"Content-Type": "application/json"}
            ),
        )
    else:
        kind = "malformed"
        req = rng.choice(
            [
                urllib.request.Request(f"{url}/recommend?user=no-such-user"),
                urllib.request.Request(f"{url}/recommend?user=1&k=0"),
                urllib.request.Request(
                    f"{url}/recommend", b"{broken", {"Content-Type": "application/json"}
                ),
            ]
        )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return kind, resp.status
    except urllib.error.HTTPError as e:
        e.read()
        return kind, e.code
    except OSError:
        return kind, 0


def load(url: str, n_users: int, seconds: float, clients: int) -> dict:
    stop = time.monotonic() + seconds
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: Counter = Counter()
    guard = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            kind, status = one_request(url, rng, n_users)
            dt = time.perf_counter() - t0
            with guard:
                latencies[kind].append(dt)
                statuses[status] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"wall": time.perf_counter() - t0, "latencies": latencies, "statuses": statuses}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="lfm2k")
    p.add_argument("--models", nargs="+", default=["ease", "lightgcn", "cadmr"])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--checkpoint", action="append", default=[], help="MODEL=PATH")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 0 < args.seconds <= 120:
        p.error("--clients must be in 1..64 and --seconds in (0, 120]: a bounded load")
    given = dict(c.split("=", 1) for c in args.checkpoint)
    dataset = resolve_dataset(args.dataset)
    print(
        f"{args.dataset}: {dataset.n_users} users x {dataset.n_items} items; "
        f"{args.clients} clients for {args.seconds:.0f} s per model, 127.0.0.1\n"
    )
    print("| model | kind | requests | req/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    all_statuses = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            ckpt = Path(given[name]) if name in given else None
            if ckpt is None:
                model = cadmr.fit(name, dataset, **QUICK.get(name, {}))
                ckpt = cadmr.save(model, Path(tmp) / f"{name}.pt")
            server, thread, url = start(ckpt, dataset)
            try:
                res = load(url, dataset.n_users, args.seconds, args.clients)
            finally:
                server.should_exit = True
                thread.join(timeout=10)
            total = sum(len(v) for v in res["latencies"].values())
            for kind in ("GET one", "POST 16", "malformed", "all"):
                lat = (
                    [x for v in res["latencies"].values() for x in v]
                    if kind == "all"
                    else res["latencies"].get(kind, [])
                )
                if not lat:
                    continue
                q = np.percentile(np.array(lat) * 1000, [50, 95, 99])
                n = total if kind == "all" else len(lat)
                print(
                    f"| {name} | {kind} | {n} | {n / res['wall']:.1f} | "
                    f"{q[0]:.1f} | {q[1]:.1f} | {q[2]:.1f} |"
                )
            all_statuses[name] = res["statuses"]
    print("\n| model | status counts (0 = no answer) |\n|---|---|")
    failed = False
    for name, statuses in all_statuses.items():
        print(f"| {name} | {', '.join(f'{s}: {n}' for s, n in sorted(statuses.items()))} |")
        failed |= any(s == 0 or s >= 500 for s in statuses)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
