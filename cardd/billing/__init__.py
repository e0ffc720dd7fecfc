"""Billing: pure tariff arithmetic (rating) and the SQL transactions that move money (ledger)."""
