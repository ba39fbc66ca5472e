"""Owners (accounts) and their credentials."""
