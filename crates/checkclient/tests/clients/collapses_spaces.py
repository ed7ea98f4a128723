#!/usr/bin/env python3
"""Broken: tidies the message up, collapsing runs of spaces (fails `send`)."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import good


class CollapsesSpaces(good.Client):
    def message(self, text):
        return " ".join(text.split())


good.main(CollapsesSpaces)
