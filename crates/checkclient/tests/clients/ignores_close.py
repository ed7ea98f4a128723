#!/usr/bin/env python3
"""Broken: does not notice that the server closed, and keeps reading the dead socket (fails
`server-closes`)."""
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import good


class IgnoresClose(good.Client):
    def closed(self):
        while True:
            time.sleep(1)


good.main(IgnoresClose)
