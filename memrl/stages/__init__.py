"""Stages: each reads and writes one run directory; `run(cfg, run_dir)` is its entry point."""
