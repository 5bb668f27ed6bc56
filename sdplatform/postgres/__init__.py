"""PostgreSQL for Pictor: Django's backend, with a cheaper check of a kept connection (base.py)."""
