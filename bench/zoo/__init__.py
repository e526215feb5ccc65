"""The real-model zoo: manifest, fetcher and input recipes (see bench/zoo.py)."""
