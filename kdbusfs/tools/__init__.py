"""Robustness tools (issue 7): the live fuzzer and the load generator.

    python -m kdbusfs.tools.fuzz --seconds 600     (scripts/fuzz)
    python -m kdbusfs.tools.load --seconds 30      (scripts/load)

See docs/robustness.md for what they check and the figures they produced.
"""
