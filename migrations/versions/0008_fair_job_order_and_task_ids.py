"""fair job order and task ids

Each owner's job clock spaces its jobs in the claim order (`image_jobs.fair_at`), so one
owner's burst queues behind other owners' work; `task_id` names the task running a job, so a
task killed at its hard time limit fails exactly the jobs it held.
"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0008", "0007"


def upgrade() -> None:
    op.add_column("owners", sa.Column("job_clock", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "image_jobs",
        sa.Column(
            "fair_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
    )
    op.add_column("image_jobs", sa.Column("task_id", sa.String(length=64), nullable=True))
    op.execute("UPDATE image_jobs SET fair_at = updated_at")
    op.create_index(
        "ix_image_jobs_pending_fair",
        "image_jobs",
        ["kind", "fair_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index("ix_image_jobs_task_id", "image_jobs", ["task_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_image_jobs_task_id", table_name="image_jobs")
    op.drop_index(
        "ix_image_jobs_pending_fair",
        table_name="image_jobs",
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_column("image_jobs", "task_id")
    op.drop_column("image_jobs", "fair_at")
    op.drop_column("owners", "job_clock")
