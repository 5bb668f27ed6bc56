"""Pictor's own job API, /api/v1/: list, get, cancel and delete the outputs of a tenant's jobs.

serializers.py reads the list's filters and describes the answers, views.py answers, urls.py
routes. Keys travel as in every format (Bearer, a `key` header, or `key` in a POST body);
errors are {"error": {"code", "message", "field"}}. Two ModelsLab general routes
(/api/wallet_balance, /api/subscribed_plan) answer from the same account data in ModelsLab's
shape. docs/api/jobs.md documents it all.
"""
