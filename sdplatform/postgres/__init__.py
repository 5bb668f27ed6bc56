"""PostgreSQL for Pictor: Django's backend, kept connections checked cheaply, lookups prepared."""
