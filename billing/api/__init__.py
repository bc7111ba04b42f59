"""The tenants' billing REST API under /api/billing (DRF): balance, ledger, usage, top-ups, limits, settings."""
