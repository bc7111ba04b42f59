"""Users, organizations (the tenants), memberships with roles, API keys and server-side chat sessions."""
import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from core.fields import NulSafeJSONField, NulSafeTextField

KEY_PREFIX = "sk-"
# The visible part shown in listings: enough to tell keys apart, far too short to use.
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8
# The largest per-minute limits an organization or key may be given (the columns' ranges).
RPM_MAX = 2**31 - 1
TPM_MAX = 2**63 - 1


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email, password=None, **extra):
        if not email:
            raise ValueError("email is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **extra):
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    def __str__(self):
        return self.email


class Organization(models.Model):
    name = models.CharField(max_length=100)  # unique without regard to case (Meta)
    created_at = models.DateTimeField(default=timezone.now)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="organizations")
    # When on, a chat completion without session_id starts a new server-side session.
    auto_create_sessions = models.BooleanField(default=False)
    # Requests and tokens per minute across all the organization's keys; null: the operator's
    # default (ORG_RATE_LIMIT_RPM / ORG_RATE_LIMIT_TPM).
    rate_limit_rpm = models.PositiveIntegerField(null=True, blank=True)
    rate_limit_tpm = models.PositiveBigIntegerField(null=True, blank=True)
    # Sessions untouched for this many days are deleted by the retention task; null keeps them.
    session_retention_days = models.PositiveIntegerField(null=True, blank=True)
    # Bytes its chat sessions may hold in all (accounts.storage); null: the operator's default
    # (CHAT_SESSION_QUOTA_BYTES).
    session_storage_quota_bytes = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(
            Lower("name"), name="organization_name_unique_ci",
            violation_error_message="An organization with this name already exists.")]

    def __str__(self):
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    MANAGER_ROLES = (Role.OWNER, Role.ADMIN)  # change keys, billing and the team; members read

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org")]

    def __str__(self):
        return f"{self.user} in {self.organization} ({self.role})"


def key_digest(secret: str) -> str:
    # Secrets carry 256 bits of entropy, so a fast hash is as safe as a slow one
    # and keeps authentication off the request's critical path.
    return hashlib.sha256(secret.encode()).hexdigest()


class SpendWindow(models.TextChoices):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class APIKey(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=DISPLAY_PREFIX_LENGTH)
    digest = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Model ids this key may use; empty means every model.
    allowed_models = models.JSONField(default=list, blank=True)
    # Requests and tokens per minute this key may use; null means no limit of its own.
    rate_limit_rpm = models.PositiveIntegerField(null=True, blank=True)
    rate_limit_tpm = models.PositiveBigIntegerField(null=True, blank=True)
    # Most this key may spend per calendar window (UTC day, ISO week, month); null means no cap.
    spend_cap_micro = models.BigIntegerField(null=True, blank=True)
    spend_cap_window = models.CharField(max_length=5, choices=SpendWindow.choices, default=SpendWindow.MONTH)

    class Meta:
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def generate_secret() -> str:
        return KEY_PREFIX + secrets.token_urlsafe(32)

    def set_secret(self, secret: str) -> None:
        self.prefix = secret[:DISPLAY_PREFIX_LENGTH]
        self.digest = key_digest(secret)

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.digest, key_digest(secret))

    def status_at(self, now=None) -> str:
        """"revoked", "expired" or "active"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or timezone.now()):
            return "expired"
        return "active"

    def is_usable(self, now=None) -> bool:
        return self.status_at(now) == "active"


def new_session_id() -> str:
    return "sess_" + secrets.token_urlsafe(18)


class ChatSession(models.Model):
    """A conversation kept on the server: requests naming it get its history prepended."""

    id = models.CharField(primary_key=True, max_length=40, default=new_session_id, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="chat_sessions")
    api_key = models.ForeignKey(APIKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # What its messages take (accounts.storage.message_bytes), kept by session_append.
    size_bytes = models.PositiveBigIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["organization", "-updated_at"])]

    def __str__(self):
        return self.title or self.id


class ChatMessage(models.Model):
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    position = models.PositiveIntegerField()  # 0, 1, 2... within the session
    role = models.CharField(max_length=16)
    content = NulSafeTextField(null=True, blank=True)  # NUL characters too (core.fields)
    name = models.CharField(max_length=64, blank=True)
    tool_calls = NulSafeJSONField(null=True, blank=True)
    tool_call_id = models.CharField(max_length=100, blank=True)
    request_id = models.CharField(max_length=64, blank=True)  # the completion that added it
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["session", "position"], name="chat_message_position_unique")]


INVITATION_LIFETIME = timedelta(days=7)


def new_invitation_token() -> str:
    return secrets.token_urlsafe(32)


def invitation_expiry():
    return timezone.now() + INVITATION_LIFETIME


class Invitation(models.Model):
    """An email invited to join an organization with a role; accepted once, within seven days."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    token = models.CharField(max_length=64, unique=True, default=new_invitation_token, editable=False)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(default=invitation_expiry)
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "accepted_at"])]

    def __str__(self):
        return f"{self.email} to {self.organization} ({self.role})"

    def is_expired(self, now=None) -> bool:
        return (now or timezone.now()) >= self.expires_at
