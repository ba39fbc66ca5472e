"""Column shapes the migrations repeat (each stays exactly what the models declare)."""

import sqlalchemy as sa


def timestamp_column(name: str) -> sa.Column[object]:
    """A `timestamptz NOT NULL DEFAULT now()` column (`created_at`, `updated_at`)."""
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )
