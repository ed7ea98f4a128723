#!/usr/bin/env python3
"""Broken: raises on a line it does not know, which kills its reading thread (fails
`unknown-line`)."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import good


class CrashesOnUnknown(good.Client):
    def unknown(self, line):
        raise ValueError(f"unexpected line from the server: {line}")


good.main(CrashesOnUnknown)
