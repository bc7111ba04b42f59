"""The dashboard's account pages and the tenancy every dashboard page runs under."""
