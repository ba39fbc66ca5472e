"""The outbox and what is delivered from it: events, webhook endpoints, deliveries."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from media_api.db import Base, Timestamped, UUIDPk, text_enum


class EventType(enum.StrEnum):
    IMAGE_CREATED = "image.created"
    IMAGE_READY = "image.ready"
    IMAGE_FAILED = "image.failed"
    IMAGE_TAGGED = "image.tagged"
    IMAGE_DELETED = "image.deleted"
    UPLOAD_REJECTED = "upload.rejected"
    WEBHOOK_DISABLED = "webhook.disabled"


class Event(Timestamped, Base):
    """One change an application cares about, written in the transaction that made it.
    `seq` orders an owner's events: it comes from the owner's row, locked until commit, so an
    owner's events commit in `seq` order (what `Last-Event-ID` resumes from)."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("owner_id", "seq", name="uq_events_owner_seq"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[EventType] = mapped_column(text_enum(EventType, "event_type"))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)


class Webhook(UUIDPk, Timestamped, Base):
    """An owner's endpoint: the events it wants (empty: all) and the secret deliveries are
    signed with (Standard Webhooks, `whsec_...`)."""

    __tablename__ = "webhooks"

    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("owners.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(
        ARRAY(String(40)), server_default=text("'{}'::varchar[]"), default=list
    )
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    secret: Mapped[str] = mapped_column(String(100))
    # Why it was turned off by the service (a long run of failures), if it was.
    disabled_reason: Mapped[str | None] = mapped_column(String(300))


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(UUIDPk, Timestamped, Base):
    """One event for one endpoint: its attempts and when the next one is due."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at"),
        # The sweep: pending deliveries whose attempt is due.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
    )

    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("events.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[DeliveryState] = mapped_column(
        text_enum(DeliveryState, "delivery_state"), default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    # [{"at": iso, "status": 200 | null, "latency_ms": 12, "error": null | "..."}]
    log: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list
    )
    last_error: Mapped[str | None] = mapped_column(Text)
