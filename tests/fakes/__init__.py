"""Test doubles (fake servers) shared by integration and e2e tests."""
