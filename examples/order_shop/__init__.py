"""The order / inventory / payment shop: everything eventtape offers, used the way a team would.

domain.py (pure) · sagas.py (choreography with compensations and a payment timeout) ·
read_model.py (projections) · app.py (HTTP API, who may do what) · runtime.py (wiring:
embedded nats-server or a URL, SQLite or PostgreSQL) · __main__.py (demo, serve).
"""
