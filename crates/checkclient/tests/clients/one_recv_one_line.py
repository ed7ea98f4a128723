#!/usr/bin/env python3
"""Broken: takes what one recv() returns as one line (fails `byte-by-byte`, `coalesced`)."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import good


class OneRecvOneLine(good.Client):
    def read_line(self):
        data = self.sock.recv(4096)
        if not data:
            return None
        return data.rstrip(b"\r\n").decode("utf-8", "replace")


good.main(OneRecvOneLine)
