"""Stripe: customers, Checkout top-ups, off-session auto-recharge, webhook events and reconciliation.

The ledger never trusts a request from a browser for money: credit is posted only from Stripe's own
word, a signed webhook event or an event read back from the API, each applied once by its id.
"""
