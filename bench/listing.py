"""Listing latency at the first and a deep page, with a million images.

Run: .venv/bin/python -m bench.listing [--rows 1000000] [--requests 200]

Seeds one owner with `--rows` images (one INSERT ... SELECT generate_series), then times
GET /v1/images?limit=24 through the real API process for page 1 and for page 10 000 (a cursor
positioned 240 000 rows deep), sequentially over one keep-alive connection. Side by side, the
same deep page fetched in SQL with OFFSET, the naive alternative the keyset replaces.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import httpx
import psycopg

from bench.stack import api_process, bench_stack
from media_api.pagination import Position, encode_cursor
from media_api.storage import keys

PAGE = 24
DEEP_PAGE = 10_000


def seed(database_url: str, owner_id: uuid.UUID, rows: int) -> None:
    """Insert `rows` images for the owner, one second apart, newest now."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO images (id, owner_id, status, content_type, size_bytes, width, height,
                                frames, sha256, original_key, created_at, updated_at, variants)
            SELECT gen_random_uuid(), %(owner)s, 'ready', 'image/jpeg', 1000 + g, 640, 480, 1,
                   decode(md5(g::text) || md5((-g)::text), 'hex'),
                   %(originals)s::text || g,
                   now() - g * interval '1 second', now(), '[]'::jsonb
            FROM generate_series(1, %(rows)s) AS g
            """,
            {"owner": owner_id, "rows": rows, "originals": keys.originals_prefix(owner_id)},
        )
        conn.execute("ANALYZE images")


def deep_position(database_url: str, owner_id: uuid.UUID, offset: int) -> Position:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT created_at, id FROM images WHERE owner_id = %s "
            "ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1",
            (owner_id, offset - 1),
        ).fetchone()
    assert row is not None
    return Position(row[0], row[1])


def offset_seconds(database_url: str, owner_id: uuid.UUID, offset: int, repeat: int) -> list[float]:
    times = []
    with psycopg.connect(database_url) as conn:
        for _ in range(repeat):
            start = time.perf_counter()
            conn.execute(
                "SELECT * FROM images WHERE owner_id = %s "
                "ORDER BY created_at DESC, id DESC OFFSET %s LIMIT %s",
                (owner_id, offset, PAGE),
            ).fetchall()
            times.append(time.perf_counter() - start)
    return times


async def api_seconds(base: str, token: str, cursor: str | None, repeat: int) -> list[float]:
    params = {"limit": str(PAGE), **({"cursor": cursor} if cursor else {})}
    headers = {"Authorization": f"Bearer {token}"}
    times = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for _ in range(5):  # warm-up: connections, plan cache
            (await http.get("/v1/images", params=params, headers=headers)).raise_for_status()
        for _ in range(repeat):
            start = time.perf_counter()
            resp = await http.get("/v1/images", params=params, headers=headers)
            times.append(time.perf_counter() - start)
            resp.raise_for_status()
            assert len(resp.json()["items"]) == PAGE
    return times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    with bench_stack(MEDIA_RATE_LIMIT_REQUESTS_PER_MINUTE="0") as stack:
        db = stack.settings.require("database_url")
        with psycopg.connect(db) as conn:
            owner_row = conn.execute(
                "SELECT owner_id FROM api_keys ORDER BY created_at DESC LIMIT 1"
            ).fetchone()
        assert owner_row is not None
        owner_id = owner_row[0]
        start = time.perf_counter()
        seed(db, owner_id, args.rows)
        print(f"seeded {args.rows:,} rows in {time.perf_counter() - start:.1f} s")
        deep_page = min(DEEP_PAGE, args.rows // PAGE - 1)
        deep = deep_position(db, owner_id, deep_page * PAGE)
        cursor = encode_cursor(
            deep, secret=stack.settings.jwt_secret, scope="images", owner_id=owner_id
        )
        with api_process(stack) as (base, _):
            first = asyncio.run(api_seconds(base, stack.token, None, args.requests))
            deep_api = asyncio.run(api_seconds(base, stack.token, cursor, args.requests))
        offset = offset_seconds(db, owner_id, deep_page * PAGE, max(20, args.requests // 10))

    print(f"\n{args.rows:,} images, limit {PAGE}, {args.requests} sequential requests each\n")
    print("| page | p50 ms | p99 ms |")
    print("|---|---|---|")
    print(f"| API, page 1 | {pct(first, 50):.1f} | {pct(first, 99):.1f} |")
    print(
        f"| API, page {deep_page:,} (keyset cursor) | {pct(deep_api, 50):.1f} | "
        f"{pct(deep_api, 99):.1f} |"
    )
    print(
        f"| SQL only, page {deep_page:,} with OFFSET (for comparison) | {pct(offset, 50):.1f} | "
        f"{pct(offset, 99):.1f} |"
    )
    print(f"\ndeep / first (p50): {pct(deep_api, 50) / pct(first, 50):.2f}")


if __name__ == "__main__":
    main()
