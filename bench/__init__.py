"""Benchmarks of mpsdproxy side by side with plain mitmproxy (`make bench`, docs/benchmarks.md)."""
