"""The web gallery: one page and its static files, served by the API itself (no build step)."""
