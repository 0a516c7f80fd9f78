"""The application processes of tests/reliability/test_rollouts_e2e.py."""
