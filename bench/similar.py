"""Near-duplicate lookup at a million images of one owner: the band indexes against a full scan.

Run: .venv/bin/python -m bench.similar [--rows 1000000] [--queries 1000] [--naive 20]
     [--requests 200]

Seeds one owner with `--rows` images whose two perceptual hashes are random 64-bit values with
exactly 32 one bits, as every real pHash has, among them `--groups` planted groups (a base and 3
copies at distance 2, 4 and 6, pairs of bits swapped). Times `statements.nearest()` through a
sync psycopg engine, as the thumbnails job runs it, at thresholds 6 and 10, half planted and
half random fingerprints, each answer checked against numpy's exact distances. Side by side,
the same question as a full scan, and GET /v1/images/{id}/similar through the real API process
(stored pairs). Method: docs/benchmarks.md ("bench/similar.py").
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import time
import uuid
from dataclasses import dataclass

import httpx
import numpy as np
import psycopg
import sqlalchemy
from numpy.typing import NDArray
from sqlalchemy import Engine, create_engine

from bench.stack import api_process, bench_owner, bench_stack, pct, postgres_line, run_bench
from media_api.images.models import BANDS, HASH_COLUMNS
from media_api.images.statements import band_probes, nearest
from media_api.imaging.similarity import Fingerprint
from media_api.storage import keys

COPIES = 3  # per planted group, 1, 2 and 3 swapped pairs away from the base
THRESHOLDS = (6, 10)
EXPLAINED = 100  # queries per threshold whose candidate rows are counted
SHIPPED = "band indexes"
CONFIGS = (SHIPPED,)
DEFAULT_THRESHOLD = 6  # settings.duplicate_distance: the pairs the API serves are linked at it

Hashes = NDArray[np.uint64]


def thirty_two_ones(rng: np.random.Generator, n: int) -> Hashes:
    """`n` random 64-bit values with exactly 32 one bits each."""
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, 100_000):
        size = min(100_000, n - start)
        ones = np.argpartition(rng.random((size, 64), dtype=np.float32), 32, axis=1)[:, :32]
        bits = np.zeros((size, 64), dtype=np.uint8)
        np.put_along_axis(bits, ones, 1, axis=1)
        packed = np.packbits(bits, axis=1, bitorder="little")
        out[start : start + size] = packed.view("<u8").ravel()
    return out


def swap_pairs(rng: random.Random, value: int, pairs: int) -> int:
    """The value with `pairs` one bits cleared and as many zero bits set: distance 2 * pairs."""
    ones = [b for b in range(64) if value >> b & 1]
    zeros = [b for b in range(64) if not value >> b & 1]
    for bit in rng.sample(ones, pairs) + rng.sample(zeros, pairs):
        value ^= 1 << bit
    return value


@dataclass
class Library:
    """The seeded rows, in table order: ids and both hashes (unsigned), and the planted groups
    as row numbers (base first)."""

    ids: list[uuid.UUID]
    whole: Hashes
    centre: Hashes
    groups: list[list[int]]


def make_library(rows: int, groups: int, seed: int) -> Library:
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    whole = thirty_two_ones(rng, rows)
    centre = thirty_two_ones(rng, rows)
    order = rng.permutation(rows)  # planted rows land anywhere in the table
    planted: list[list[int]] = []
    for g in range(groups):
        members = [int(r) for r in order[g * (COPIES + 1) : (g + 1) * (COPIES + 1)]]
        base = members[0]
        for pairs, row in enumerate(members[1:], start=1):
            whole[row] = swap_pairs(pyrng, int(whole[base]), pairs)
            centre[row] = swap_pairs(pyrng, int(centre[base]), pyrng.randint(1, 3))
        planted.append(members)
    ids = [uuid.UUID(bytes=pyrng.randbytes(16), version=4) for _ in range(rows)]
    return Library(ids, whole, centre, planted)


def signed(values: Hashes) -> NDArray[np.int64]:
    return values.view(np.int64)


def seed(database_url: str, owner_id: uuid.UUID, lib: Library) -> None:
    """COPY the hashes in, insert the images from them with the band indexes dropped, rebuild
    the indexes from their own definitions, ANALYZE."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        bands = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename = 'images' AND indexname LIKE 'ix_images_phash%'"
        ).fetchall()
        assert len(bands) == BANDS * len(HASH_COLUMNS), bands
        for name, _ in bands:
            conn.execute(f"DROP INDEX {name}")
        conn.execute(
            "CREATE TEMP TABLE seed_hashes (g int, id uuid, phash bigint, phash_centre bigint)"
        )
        whole, centre = signed(lib.whole).tolist(), signed(lib.centre).tolist()
        with conn.cursor().copy("COPY seed_hashes FROM STDIN") as copy:
            for g, (image_id, w, c) in enumerate(zip(lib.ids, whole, centre, strict=True)):
                copy.write_row((g, image_id, w, c))
        conn.execute(
            """
            INSERT INTO images (id, owner_id, status, content_type, size_bytes, width, height,
                                frames, sha256, original_key, created_at, updated_at, variants,
                                phash, phash_centre)
            SELECT id, %(owner)s, 'ready', 'image/jpeg', 1000 + g, 640, 480, 1,
                   decode(md5(g::text) || md5((-g)::text), 'hex'),
                   %(originals)s::text || g,
                   now() - g * interval '1 second', now(), '[]'::jsonb, phash, phash_centre
            FROM seed_hashes ORDER BY g
            """,
            {"owner": owner_id, "originals": keys.originals_prefix(owner_id)},
        )
        for _, definition in bands:
            conn.execute(definition)
        conn.execute("VACUUM ANALYZE images")


def fingerprint(lib: Library, row: int) -> Fingerprint:
    return Fingerprint(
        whole=int(signed(lib.whole[row : row + 1])[0]),
        centre=int(signed(lib.centre[row : row + 1])[0]),
    )


def distances(lib: Library, fp: Fingerprint) -> NDArray[np.uint8]:
    """Fingerprint.distance from `fp` to every row, exactly, in numpy."""
    w = np.uint64(fp.whole & (1 << 64) - 1)
    c = np.uint64(fp.centre & (1 << 64) - 1)
    return np.minimum(
        np.minimum(np.bitwise_count(lib.whole ^ w), np.bitwise_count(lib.whole ^ c)),
        np.bitwise_count(lib.centre ^ w),
    )


def seed_pairs(database_url: str, lib: Library) -> dict[uuid.UUID, int]:
    """image_duplicates for the planted groups as the thumbnails job links them (both ways,
    within the default threshold); the number of pairs of each base."""
    rows = []
    for members in lib.groups:
        for a in members:
            for b in members:
                if a != b:
                    d = fingerprint(lib, a).distance(fingerprint(lib, b))
                    if d <= DEFAULT_THRESHOLD:
                        rows.append((lib.ids[a], lib.ids[b], d))
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY image_duplicates (image_id, other_id, distance) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute("ANALYZE image_duplicates")
    counts: dict[uuid.UUID, int] = {}
    for image_id, _, _ in rows:
        counts[image_id] = counts.get(image_id, 0) + 1
    return {lib.ids[m[0]]: counts.get(lib.ids[m[0]], 0) for m in lib.groups}


@dataclass
class Query:
    fp: Fingerprint
    planted: bool
    expected: dict[int, set[uuid.UUID]]  # by threshold: the ids within it (numpy's answer)


def make_queries(lib: Library, n: int, seed: int) -> list[Query]:
    rng = np.random.default_rng(seed + 1)
    bases = [m[0] for m in lib.groups[: n // 2]]
    randoms = [
        Fingerprint(int(w), int(c))
        for w, c in zip(
            signed(thirty_two_ones(rng, n - len(bases))).tolist(),
            signed(thirty_two_ones(rng, n - len(bases))).tolist(),
            strict=True,
        )
    ]
    fps = [(fingerprint(lib, b), True) for b in bases] + [(fp, False) for fp in randoms]
    random.Random(seed).shuffle(fps)
    queries = []
    for fp, planted in fps:
        d = distances(lib, fp)
        expected = {t: {lib.ids[i] for i in np.flatnonzero(d <= t).tolist()} for t in THRESHOLDS}
        queries.append(Query(fp, planted, expected))
    return queries


def probes(fp: Fingerprint, threshold: int) -> int:
    """Band values the lookup probes, as statements._candidates builds them."""
    radius = threshold // BANDS
    per_column = {"phash": (fp.whole, fp.centre), "phash_centre": (fp.whole,)}
    return sum(
        len(band_probes(hashes, band, radius))
        for hashes in per_column.values()
        for band in range(BANDS)
    )


@dataclass
class Timed:
    seconds: list[float]
    planted_seconds: list[float]
    random_seconds: list[float]
    found: int
    expected: int
    exact: int  # answers equal to numpy's, as sets of ids
    slowest: tuple[float, Fingerprint] | None = None


def time_nearest(
    engine: Engine, owner_id: uuid.UUID, queries: list[Query], threshold: int
) -> Timed:
    timed = Timed([], [], [], 0, 0, 0)
    with engine.connect() as conn:
        for q in queries[:20]:  # warm-up: connection, caches
            conn.execute(nearest(owner_id, q.fp, threshold)).all()
        for q in queries:
            start = time.perf_counter()
            rows = conn.execute(nearest(owner_id, q.fp, threshold)).all()
            elapsed = time.perf_counter() - start
            timed.seconds.append(elapsed)
            (timed.planted_seconds if q.planted else timed.random_seconds).append(elapsed)
            if timed.slowest is None or elapsed > timed.slowest[0]:
                timed.slowest = (elapsed, q.fp)
            got = {r[0] for r in rows}
            want = q.expected[threshold]
            timed.found += len(got & want)
            timed.expected += len(want)
            timed.exact += got == want
        conn.rollback()
    return timed


def literal_sql(engine: Engine, stmt: sqlalchemy.Select[uuid.UUID, int]) -> str:
    return str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))


def explain(
    database_url: str, engine: Engine, owner_id: uuid.UUID, queries: list[Query], threshold: int
) -> tuple[float, list[str]]:
    """Mean rows the bitmap heap scan checked (EXPLAIN ANALYZE of each query), and the shape
    of the first query's plan."""
    checked = []
    shape: list[str] = []
    with psycopg.connect(database_url) as conn:
        for q in queries:
            sql = literal_sql(engine, nearest(owner_id, q.fp, threshold))
            row = conn.execute(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}").fetchone()
            assert row is not None
            nodes = list(walk(row[0][0]["Plan"]))
            heap = [n for n in nodes if n["Node Type"] in ("Bitmap Heap Scan", "Seq Scan")]
            checked.append(
                sum(
                    # per-loop averages: a parallel scan runs one loop per process
                    (
                        n["Actual Rows"]
                        + n.get("Rows Removed by Filter", 0)
                        + n.get("Rows Removed by Index Recheck", 0)
                    )
                    * n["Actual Loops"]
                    for n in heap
                )
            )
            if not shape:
                text_plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}").fetchall()
                shape = [line[0][:150] for line in text_plan if "Cond" not in line[0]]
    return statistics.mean(checked), shape


def slowest_again(
    database_url: str, engine: Engine, owner_id: uuid.UUID, fp: Fingerprint, threshold: int
) -> str:
    """The slowest query's plan, run again: its scan nodes and time."""
    sql = literal_sql(engine, nearest(owner_id, fp, threshold))
    with psycopg.connect(database_url) as conn:
        plan = [r[0] for r in conn.execute(f"EXPLAIN ANALYZE {sql}").fetchall()]
    scans = [line.strip()[:60] for line in plan if "Scan" in line or "BitmapOr" in line]
    return "; ".join(scans[:3] + [p for p in plan if p.startswith("Execution")])


def walk(node: dict[str, object]) -> list[dict[str, object]]:
    out = [node]
    for child in node.get("Plans", []):  # type: ignore[attr-defined]
        out.extend(walk(child))
    return out


NAIVE = """
SELECT id, least(bit_count((phash # %(w)s)::bit(64)), bit_count((phash # %(c)s)::bit(64)),
                 bit_count((phash_centre # %(w)s)::bit(64))) AS distance
FROM images WHERE owner_id = %(owner)s AND phash IS NOT NULL
  AND least(bit_count((phash # %(w)s)::bit(64)), bit_count((phash # %(c)s)::bit(64)),
            bit_count((phash_centre # %(w)s)::bit(64))) <= %(t)s
ORDER BY distance, id LIMIT 50
"""


def time_naive(
    database_url: str, owner_id: uuid.UUID, queries: list[Query], threshold: int
) -> tuple[list[float], int, str]:
    """The full scan: seconds per query, answers equal to numpy's, and the plan's scan line."""
    times, exact = [], 0
    with psycopg.connect(database_url) as conn:
        for q in queries:
            params = {"w": q.fp.whole, "c": q.fp.centre, "owner": owner_id, "t": threshold}
            start = time.perf_counter()
            rows = conn.execute(NAIVE, params).fetchall()
            times.append(time.perf_counter() - start)
            exact += {r[0] for r in rows} == q.expected[threshold]
        params = {"w": 0, "c": 0, "owner": owner_id, "t": threshold}
        plan = [r[0] for r in conn.execute("EXPLAIN " + NAIVE, params).fetchall()]
    return times, exact, next(line.strip() for line in plan if "Scan" in line)


async def similar_seconds(
    base: str, token: str, ids: list[uuid.UUID], counts: dict[uuid.UUID, int]
) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    times = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for image_id in ids[:5]:  # warm-up
            (await http.get(f"/v1/images/{image_id}/similar", headers=headers)).raise_for_status()
        for image_id in ids:
            start = time.perf_counter()
            resp = await http.get(f"/v1/images/{image_id}/similar", headers=headers)
            times.append(time.perf_counter() - start)
            resp.raise_for_status()
            assert len(resp.json()["items"]) == counts[image_id], resp.json()
    return times


def versions(database_url: str) -> str:
    return (
        f"{postgres_line(database_url)}, SQLAlchemy {sqlalchemy.__version__}, "
        f"psycopg {psycopg.__version__}, numpy {np.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--naive", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()

    start = time.perf_counter()
    lib = make_library(args.rows, args.groups, args.seed)
    queries = make_queries(lib, args.queries, args.seed)
    print(
        f"made {args.rows:,} hashes and {len(queries)} queries in "
        f"{time.perf_counter() - start:.1f} s"
    )
    assert all(bin(int(v)).count("1") == 32 for v in lib.whole[:1000])
    # The bench's own million ids and answers out of the collector's way: a full collection
    # walking them would show up as a query's latency.
    gc.collect()
    gc.freeze()

    with bench_stack(MEDIA_RATE_LIMIT_REQUESTS_PER_MINUTE="0") as stack:
        db = stack.settings.require("database_url")
        owner_id = bench_owner(db)
        start = time.perf_counter()
        seed(db, owner_id, lib)
        print(
            f"seeded {args.rows:,} rows and rebuilt the band indexes in "
            f"{time.perf_counter() - start:.1f} s"
        )
        counts = seed_pairs(db, lib)

        engine = create_engine(stack.settings.sync_database_url, pool_size=2)
        results = {}
        for config in CONFIGS:
            n = len(queries)
            for threshold in THRESHOLDS:
                timed = time_nearest(engine, owner_id, queries[:n], threshold)
                sample = queries[: min(EXPLAINED, n // 5)]
                checked, shape = explain(db, engine, owner_id, sample, threshold)
                results[config, threshold] = (timed, checked, shape)
                assert timed.slowest is not None
                seconds, fp = timed.slowest
                again = slowest_again(db, engine, owner_id, fp, threshold)
                print(f"{config}, {threshold}: slowest {seconds * 1000:.0f} ms; again: {again}")
        engine.dispose()
        naive_queries = queries[: args.naive]
        naive, naive_exact, naive_plan = time_naive(db, owner_id, naive_queries, DEFAULT_THRESHOLD)
        bases = [lib.ids[m[0]] for m in lib.groups]
        requested = [bases[i % len(bases)] for i in range(args.requests)]
        with api_process(stack) as (base, _):
            api = asyncio.run(similar_seconds(base, stack.token, requested, counts))
        line = versions(db)

    planted = sum(q.planted for q in queries)
    print(
        f"\n{args.rows:,} images of one owner ({args.groups:,} planted groups of "
        f"{COPIES + 1}), {len(queries)} queries ({planted} planted, "
        f"{len(queries) - planted} random), sequential; {line}\n"
    )
    print(
        "| lookup | threshold (radius) | probes | p50 ms | p95 ms | p99 ms | p99 planted / "
        "random ms | mean candidate rows | recall | answers equal to numpy's |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (config, threshold), (timed, checked, _) in results.items():
        mean_probes = statistics.mean(probes(q.fp, threshold) for q in queries)
        recall = timed.found / timed.expected * 100
        print(
            f"| `nearest()`, {config} | {threshold} ({threshold // BANDS}) | "
            f"{mean_probes:.0f} | {pct(timed.seconds, 50):.1f} | {pct(timed.seconds, 95):.1f} | "
            f"{pct(timed.seconds, 99):.1f} | {pct(timed.planted_seconds, 99):.1f} / "
            f"{pct(timed.random_seconds, 99):.1f} | {checked:,.0f} | {recall:.1f} % "
            f"({timed.found}/{timed.expected}) | {timed.exact}/{len(timed.seconds)} |"
        )
    print(
        f"| full scan (bit_count over every row) | {DEFAULT_THRESHOLD} | - | "
        f"{pct(naive, 50):.1f} | {pct(naive, 95):.1f} | {pct(naive, 99):.1f} | - | "
        f"{args.rows:,} | - | "
        f"{naive_exact}/{len(naive_queries)} |"
    )
    print(
        f"| GET /v1/images/{{id}}/similar (stored pairs), {len(api)} requests | - | - | "
        f"{pct(api, 50):.1f} | {pct(api, 95):.1f} | {pct(api, 99):.1f} | - | - | - | - |"
    )
    print(f"\nfull scan plan: {naive_plan}")
    for (config, threshold), (_, _, shape) in results.items():
        print(f"\nEXPLAIN ANALYZE, {config}, threshold {threshold} (Cond lines left out):")
        print("\n".join(shape))


if __name__ == "__main__":
    run_bench(main)
