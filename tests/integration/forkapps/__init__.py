"""Apps served by real prefork servers in tests/integration/test_client_fork.py (gunicorn, uvicorn)."""
