"""Deployment checks (`manage.py check --deploy`) for SITE_URL, which the links in emails are built from."""
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.http.request import validate_host


@register(Tags.security, deploy=True)
def site_url_check(app_configs, **kwargs):
    site = urlsplit(settings.SITE_URL)
    problems = []
    if site.scheme != "https" and (settings.SECURE_SSL_REDIRECT or settings.SESSION_COOKIE_SECURE):
        problems.append(Warning(
            f"SITE_URL={settings.SITE_URL} is not https, but the site is served over https only: the links in "
            "emails (sign-up, password reset, invitations) would go through a redirect, or not work.",
            hint="Set SITE_URL to the https:// address people reach this site at.", id="accounts.W001"))
    if not validate_host(site.hostname, settings.ALLOWED_HOSTS):
        problems.append(Warning(
            f"The host of SITE_URL={settings.SITE_URL} is not in ALLOWED_HOSTS: the links in emails would be "
            "refused with 400.", hint="Set SITE_URL to this site's address, or add its host to ALLOWED_HOSTS.",
            id="accounts.W002"))
    return problems
