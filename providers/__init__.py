"""Provider adapters, drop-in SDK clients and the capability facades built on `resilient`."""

from providers.models import Attachment, Charge, Email, Post, Sms

__all__ = ["Attachment", "Charge", "Email", "Post", "Sms"]
