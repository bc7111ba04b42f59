"""Absolute links for emails, built from SITE_URL: never from a request's Host header, which its sender chooses."""
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.urls import reverse


def site_link(viewname: str, *args, **query) -> str:
    """SITE_URL + the view's path (+ ?query), e.g. site_link("login", next="/team/")."""
    query = {name: value for name, value in query.items() if value}
    return settings.SITE_URL + reverse(viewname, args=args) + (f"?{urlencode(query)}" if query else "")


def site_domain() -> str:
    """SITE_URL's host[:port], as emails name the site."""
    return urlsplit(settings.SITE_URL).netloc
