"""The head map alone: staging a checkpoint's notes at a map of N subjects, and memory.

    python bench/headmap.py --subjects 100000
    python bench/headmap.py --subjects 1000000 --batch 1000

Builds a SqliteNodeStore map of N subjects in a temporary directory (notes in batches
of ``--build-batch``), then times ``--rounds`` checkpoints of ``--batch`` notes each
(half new subjects, half existing ones): ``stage``, ``commit`` and one ``prove``.
Prints the figures, the process's RSS and the size of the database.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import tempfile
import time
from pathlib import Path

from ledger.formats.headmap import HeadMap, SqliteNodeStore


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1)]


def ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 50) * 1e3:7.2f} ms  p99 {percentile(values, 99) * 1e3:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256, help="notes per checkpoint")
    parser.add_argument("--rounds", type=int, default=50, help="checkpoints timed")
    parser.add_argument("--build-batch", type=int, default=20_000)
    parser.add_argument("--cache-nodes", type=int, default=1_000_000, help="SqliteNodeStore's")
    args = parser.parse_args()

    rng = random.Random(7)
    index = 0

    def leaf() -> bytes:
        return hashlib.sha256(index.to_bytes(8, "big")).digest()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "heads.sqlite"
        heads = HeadMap(SqliteNodeStore(path, cache_nodes=args.cache_nodes))
        start = time.perf_counter()
        for s in range(args.subjects):
            heads.note(f"system/{s}", index, leaf())
            index += 1
            if heads.pending >= args.build_batch:
                heads.stage(index)
                heads.commit()
        heads.stage(index)
        heads.commit()
        built = time.perf_counter() - start
        print(
            f"built {heads.subjects} subjects in {built:.1f} s "
            f"({heads.subjects / built:,.0f} subjects/s), RSS {rss_mb():.0f} MB"
        )

        stages, commits, proves = [], [], []
        fresh = args.subjects
        for _ in range(args.rounds):
            for j in range(args.batch):
                if j % 2:
                    name = f"system/{fresh}"
                    fresh += 1
                else:
                    name = f"system/{rng.randrange(args.subjects)}"
                heads.note(name, index, leaf())
                index += 1
            t0 = time.perf_counter()
            heads.stage(index)
            t1 = time.perf_counter()
            heads.commit()
            t2 = time.perf_counter()
            heads.prove(f"system/{rng.randrange(fresh)}")
            t3 = time.perf_counter()
            stages.append(t1 - t0)
            commits.append(t2 - t1)
            proves.append(t3 - t2)
        print(f"stage  {args.batch} notes at {args.subjects} subjects: {ms(stages)}")
        print(f"commit {args.batch} notes at {args.subjects} subjects: {ms(commits)}")
        print(f"prove  one subject at {args.subjects} subjects:  {ms(proves)}")
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        print(f"RSS {rss_mb():.0f} MB, database {size / 2**20:.0f} MiB")
        heads.close()


if __name__ == "__main__":
    main()
