"""The staff billing page: balances, revenue, spend, holds in flight and payment trouble at a glance."""
