"""Django admin of the billing app: editable prices, read-only money rows, staff adjustments and refunds.

Importing the modules registers their admins with the site.
"""
from billing.admin import money, organizations, prices  # noqa: F401
