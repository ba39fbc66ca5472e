"""Column shapes the migrations repeat (each stays exactly what the models declare)."""

import sqlalchemy as sa


def timestamp_column(name: str) -> sa.Column[object]:
    """A `timestamptz NOT NULL DEFAULT now()` column (`created_at`, `updated_at`)."""
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def text_enum_column(name: str, enum_name: str, *values: str) -> sa.Column[object]:
    """A NOT NULL varchar(32) with a CHECK of its values (the models' `db.text_enum`)."""
    kind = sa.Enum(*values, name=enum_name, native_enum=False, create_constraint=True, length=32)
    return sa.Column(name, kind, nullable=False)
