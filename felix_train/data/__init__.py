"""Datasets: the JSONL formats each algorithm trains on, their validation, and the registry."""
