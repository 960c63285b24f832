#!/usr/bin/env python
"""Thin launcher: the speed table lives in :mod:`magihuman.harness.speed` (``--help`` there)."""

from magihuman.harness.speed import main

if __name__ == "__main__":
    main()
