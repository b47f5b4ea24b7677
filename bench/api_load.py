"""A fallback load generator when `wrk` is not installed: threads of httpx clients, fixed duration, JSON out.

python bench/api_load.py --url http://127.0.0.1:8123/v1/chat --bodies bodies.json --seconds 10 --threads 8
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, type=Path)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    bodies = [json.dumps(b, ensure_ascii=False).encode() for b in json.loads(args.bodies.read_text())]
    counts = [0] * args.threads
    errors = [0] * args.threads
    deadline = time.monotonic() + args.seconds

    def worker(i: int) -> None:
        with httpx.Client(headers={"Content-Type": "application/json"}, timeout=30) as client:
            k = i
            while time.monotonic() < deadline:
                response = client.post(args.url, content=bodies[k % len(bodies)])
                k += args.threads
                if response.status_code == 200:
                    counts[i] += 1
                else:
                    errors[i] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    print(json.dumps({"requests": sum(counts), "errors": sum(errors), "elapsed_s": elapsed}))


if __name__ == "__main__":
    main()
