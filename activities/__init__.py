"""Thin activity adapters over the store and the payment client. No business rules live here."""
