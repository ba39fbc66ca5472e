"""Imports every mapped class, so `Base.metadata` is complete for Alembic and tests."""

from media_api.accounts.models import ApiKey, Owner
from media_api.events.models import Event, Webhook, WebhookDelivery
from media_api.galleries.models import Gallery, GalleryImage
from media_api.images.models import Image, ImageDuplicate, ImageTag
from media_api.jobs.models import ImageJob
from media_api.uploads.models import Upload

__all__ = [
    "ApiKey",
    "Event",
    "Gallery",
    "GalleryImage",
    "Image",
    "ImageDuplicate",
    "ImageJob",
    "ImageTag",
    "Owner",
    "Upload",
    "Webhook",
    "WebhookDelivery",
]
