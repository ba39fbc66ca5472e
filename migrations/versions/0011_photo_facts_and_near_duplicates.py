"""photo facts and near-duplicates

Capture facts (`taken_at`, `photo`), the perceptual hashes with their band indexes, the pairs
of near-duplicate images, and the owners' `expose_location` setting.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision, down_revision = "0011", "0010"

TAKEN_ORDER = "coalesce(taken_at, '-infinity'::timestamptz)"
BANDS = 4
HASH_COLUMNS = ("phash", "phash_centre")


def upgrade() -> None:
    op.add_column(
        "owners",
        sa.Column("expose_location", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("images", sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "images", sa.Column("photo", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.add_column("images", sa.Column("phash", sa.BigInteger(), nullable=True))
    op.add_column("images", sa.Column("phash_centre", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_images_owner_taken", "images", ["owner_id", sa.text(TAKEN_ORDER), "id"], unique=False
    )
    for column in HASH_COLUMNS:
        for band in range(BANDS):
            op.create_index(
                f"ix_images_{column}_band{band}",
                "images",
                ["owner_id", sa.text(f"(({column} >> {16 * band}) & 65535)")],
                unique=False,
            )
    op.create_table(
        "image_duplicates",
        sa.Column("image_id", sa.Uuid(), nullable=False),
        sa.Column("other_id", sa.Uuid(), nullable=False),
        sa.Column("distance", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_duplicates_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["other_id"],
            ["images.id"],
            name=op.f("fk_image_duplicates_other_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", "other_id", name=op.f("pk_image_duplicates")),
    )
    op.create_index("ix_image_duplicates_other", "image_duplicates", ["other_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_image_duplicates_other", table_name="image_duplicates")
    op.drop_table("image_duplicates")
    for column in HASH_COLUMNS:
        for band in range(BANDS):
            op.drop_index(f"ix_images_{column}_band{band}", table_name="images")
    op.drop_index("ix_images_owner_taken", table_name="images")
    op.drop_column("images", "phash_centre")
    op.drop_column("images", "phash")
    op.drop_column("images", "photo")
    op.drop_column("images", "taken_at")
    op.drop_column("owners", "expose_location")
