"""Run untrusted programs (model-written code) with their tests, isolated from the host."""
