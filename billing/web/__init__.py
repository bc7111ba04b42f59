"""The dashboard pages of this app."""
