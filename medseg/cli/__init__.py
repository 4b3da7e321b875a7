"""Command-line interface: parsing only; every command calls the Python API."""
