"""Listing latency at the first and a deep page, with a million images, in both sort orders.

Run: .venv/bin/python -m bench.listing [--rows 1000000] [--requests 200]

Seeds one owner with `--rows` images (one INSERT ... SELECT generate_series): created one second
apart, 85 % with a capture time spread over 15 years in an order unrelated to the upload order,
15 % without one. Then times GET /v1/images?limit=24 through the real API process for page 1 and
for page 10 000 (a cursor positioned 240 000 rows deep), sequentially over one keep-alive
connection, by upload time and by capture time (`sort=taken_at`, plus a deep page inside the
images without a capture time, which sort last). Side by side, the same deep page fetched in SQL
with OFFSET, the naive alternative the keyset replaces. The capture-time statement the API runs
is EXPLAINed once, to show the index it walks. Figures: docs/benchmarks.md ("Listing at depth",
"Capture-time listing").
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from sqlalchemy.dialects import postgresql

from bench.stack import api_process, bench_owner, bench_stack, pct, postgres_line, run_bench
from media_api.images import repository
from media_api.images.models import TAKEN_ORDER
from media_api.pagination import Position, encode_cursor
from media_api.storage import keys

PAGE = 24
DEEP_PAGE = 10_000
TAKEN_SHARE = 0.85  # of the images with a capture time; the rest have none
INDEX = "ix_images_owner_taken"

ORDERS = {
    "created_at": "created_at DESC, id DESC",
    "taken_at": f"{TAKEN_ORDER} DESC, id DESC",
}
SCOPES = {"created_at": "images", "taken_at": "images:taken_at"}


def seed(database_url: str, owner_id: uuid.UUID, rows: int) -> None:
    """Insert `rows` images for the owner, one second apart, newest now; most with a random
    capture time in the last 15 years, the rest with none."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.18)")
        conn.execute(
            """
            INSERT INTO images (id, owner_id, status, content_type, size_bytes, width, height,
                                frames, sha256, original_key, created_at, updated_at, variants,
                                taken_at)
            SELECT gen_random_uuid(), %(owner)s, 'ready', 'image/jpeg', 1000 + g, 640, 480, 1,
                   decode(md5(g::text) || md5((-g)::text), 'hex'),
                   %(originals)s::text || g,
                   now() - g * interval '1 second', now(), '[]'::jsonb,
                   CASE WHEN random() < %(share)s
                        THEN now() - random() * interval '15 years' END
            FROM generate_series(1, %(rows)s) AS g
            """,
            {
                "owner": owner_id,
                "rows": rows,
                "originals": keys.originals_prefix(owner_id),
                "share": TAKEN_SHARE,
            },
        )
        conn.execute("ANALYZE images")


def untaken(database_url: str, owner_id: uuid.UUID) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM images WHERE owner_id = %s AND taken_at IS NULL", (owner_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def deep_position(database_url: str, owner_id: uuid.UUID, offset: int, sort: str) -> Position:
    """The sort key of the row just before `offset`, in the listing's own order."""
    column = "created_at" if sort == "created_at" else "taken_at"
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"SELECT {column}, id FROM images WHERE owner_id = %s "  # noqa: S608
            f"ORDER BY {ORDERS[sort]} OFFSET %s LIMIT 1",
            (owner_id, offset - 1),
        ).fetchone()
    assert row is not None
    return Position(row[0], row[1])


def offset_seconds(
    database_url: str, owner_id: uuid.UUID, offset: int, repeat: int, sort: str
) -> list[float]:
    times = []
    with psycopg.connect(database_url) as conn:
        for _ in range(repeat):
            start = time.perf_counter()
            conn.execute(
                f"SELECT * FROM images WHERE owner_id = %s "  # noqa: S608
                f"ORDER BY {ORDERS[sort]} OFFSET %s LIMIT %s",
                (owner_id, offset, PAGE),
            ).fetchall()
            times.append(time.perf_counter() - start)
    return times


@dataclass
class _Captured:
    """Stands in for an AsyncSession: keeps the statement repository.page builds."""

    statement: Any = None

    async def execute(self, statement: Any) -> _Captured:
        self.statement = statement
        return self

    def scalars(self) -> list[object]:
        return []


def scan_line(database_url: str, owner_id: uuid.UUID, after: Position) -> str:
    """The scan node of the plan of the exact statement the API runs for this page."""
    captured = _Captured()
    asyncio.run(
        repository.page(
            captured,  # type: ignore[arg-type]
            owner_id,
            repository.ImageFilter(),
            after,
            PAGE + 1,
            repository.SortBy.TAKEN_AT,
        )
    )
    compiled = captured.statement.compile(dialect=postgresql.psycopg.dialect())
    with psycopg.connect(database_url) as conn:
        plan = [r[0] for r in conn.execute(f"EXPLAIN {compiled}", compiled.params).fetchall()]
    line = next(text for text in plan if "Scan" in text)
    assert INDEX in line, plan
    return line.strip().removeprefix("->  ")


async def api_seconds(
    base: str, token: str, cursor: str | None, repeat: int, sort: str
) -> list[float]:
    params = {"limit": str(PAGE), "sort": sort, **({"cursor": cursor} if cursor else {})}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    with bench_stack(MEDIA_RATE_LIMIT_REQUESTS_PER_MINUTE="0") as stack:
        db = stack.settings.require("database_url")
        owner_id = bench_owner(db)
        start = time.perf_counter()
        seed(db, owner_id, args.rows)
        print(f"seeded {args.rows:,} rows in {time.perf_counter() - start:.1f} s")
        nulls = untaken(db, owner_id)
        deep_page = min(DEEP_PAGE, args.rows // PAGE - 1)
        # A page in the middle of the images without a capture time (they sort last).
        tail_page = (args.rows - nulls // 2) // PAGE
        pages = {
            "created_at": [("page 1", None), (f"page {deep_page:,}", deep_page)],
            "taken_at": [
                ("page 1", None),
                (f"page {deep_page:,}", deep_page),
                (f"page {tail_page:,}, no capture time", tail_page),
            ],
        }

        def cursor(sort: str, number: int | None) -> str | None:
            if number is None:
                return None
            at = deep_position(db, owner_id, number * PAGE, sort)
            if sort == "taken_at":
                print(f"plan, taken_at {number:,}: {scan_line(db, owner_id, at)}")
            return encode_cursor(
                at, secret=stack.settings.jwt_secret, scope=SCOPES[sort], owner_id=owner_id
            )

        cursors = {(s, n): cursor(s, n) for s, rows in pages.items() for _, n in rows}
        timed: dict[tuple[str, int | None], list[float]] = {}
        with api_process(stack) as (base, _):
            for (sort, number), token in cursors.items():
                timed[sort, number] = asyncio.run(
                    api_seconds(base, stack.token, token, args.requests, sort)
                )
        repeat = max(20, args.requests // 10)
        offsets = {
            s: offset_seconds(db, owner_id, deep_page * PAGE, repeat, s)
            for s in ("created_at", "taken_at")
        }
        line = postgres_line(db)

    print(
        f"\n{args.rows:,} images ({nulls:,} without a capture time), limit {PAGE}, "
        f"{args.requests} sequential requests each; {line}\n"
    )
    print("| sort | page | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for sort, rows in pages.items():
        for label, number in rows:
            kind = "" if number is None else " (keyset cursor)"
            t = timed[sort, number]
            print(f"| {sort} | API, {label}{kind} | {pct(t, 50):.1f} | {pct(t, 99):.1f} |")
        t = offsets[sort]
        print(
            f"| {sort} | SQL only, page {deep_page:,} with OFFSET (for comparison) | "
            f"{pct(t, 50):.1f} | {pct(t, 99):.1f} |"
        )
    print()
    for sort, rows in pages.items():
        first = timed[sort, None]
        for label, number in rows[1:]:
            t = timed[sort, number]
            print(
                f"{sort}: {label} / page 1: p50 {pct(t, 50) / pct(first, 50):.2f}, "
                f"p99 {pct(t, 99) / pct(first, 99):.2f}"
            )


if __name__ == "__main__":
    run_bench(main)
