"""uploads

Resumable (tus) and direct uploads: one row each with its progress, lease and the quota it
holds (`owners.bytes_reserved`), until it becomes an image or expires.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.columns import text_enum_column, timestamp_column

revision, down_revision = "0009", "0008"


def upgrade() -> None:
    op.add_column(
        "owners",
        sa.Column("bytes_reserved", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.create_table(
        "uploads",
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        text_enum_column("kind", "upload_kind", "tus", "direct"),
        text_enum_column(
            "state", "upload_state", "receiving", "validating", "accepted", "rejected", "expired"
        ),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("title", sa.String(length=300), nullable=True),
        sa.Column("gallery_id", sa.Uuid(), nullable=True),
        sa.Column("metadata", sa.String(length=4096), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("object_key", sa.String(length=512), nullable=False),
        sa.Column("s3_upload_id", sa.String(length=1024), nullable=True),
        sa.Column(
            "parts",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("next_part", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("tail", sa.LargeBinary(), nullable=True),
        sa.Column("expected_sha256", sa.LargeBinary(length=32), nullable=True),
        sa.Column("sha256", sa.LargeBinary(length=32), nullable=True),
        sa.Column("image_id", sa.Uuid(), nullable=True),
        sa.Column("error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("lease_id", sa.Uuid(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("takeover_wanted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        timestamp_column("updated_at"),
        sa.Column("id", sa.Uuid(), nullable=False),
        timestamp_column("created_at"),
        sa.CheckConstraint("length > 0", name=op.f("ck_uploads_length_positive")),
        sa.CheckConstraint(
            "received >= 0 AND received <= length", name=op.f("ck_uploads_received_within_length")
        ),
        sa.CheckConstraint("reserved_bytes >= 0", name=op.f("ck_uploads_reserved_nonnegative")),
        sa.ForeignKeyConstraint(
            ["gallery_id"],
            ["galleries.id"],
            name=op.f("fk_uploads_gallery_id_galleries"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_uploads_image_id_images"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_uploads_owner_id_owners"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    # Images hardly compress: keep the tail out of line and uncompressed.
    op.execute("ALTER TABLE uploads ALTER COLUMN tail SET STORAGE EXTERNAL")
    op.create_index("ix_uploads_owner_created", "uploads", ["owner_id", "created_at"], unique=False)
    op.create_index(
        "ix_uploads_live_expires",
        "uploads",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("state IN ('receiving', 'validating')"),
    )
    op.create_index(
        "ix_uploads_ended_updated",
        "uploads",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("state IN ('accepted', 'rejected', 'expired')"),
    )


def downgrade() -> None:
    op.drop_index("ix_uploads_ended_updated", table_name="uploads")
    op.drop_index("ix_uploads_live_expires", table_name="uploads")
    op.drop_index("ix_uploads_owner_created", table_name="uploads")
    op.drop_table("uploads")
    op.drop_column("owners", "bytes_reserved")
