"""The offline default: a small real LLM and an embedding model served on 127.0.0.1.

Both come from PyPI packages, so the demo and the end-to-end tests need no key and no network.
"""
