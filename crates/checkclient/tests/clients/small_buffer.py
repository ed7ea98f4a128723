#!/usr/bin/env python3
"""Broken: a fixed 1024-byte line buffer, as `char buf[1024]` in C: a longer line is cut where
the buffer is full (fails `long-list`)."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import good

BUFFER_BYTES = 1024


class SmallBuffer(good.Client):
    def read_line(self):
        while b"\n" not in self.buf and len(self.buf) < BUFFER_BYTES:
            data = self.sock.recv(BUFFER_BYTES - len(self.buf))
            if not data:
                return None
            self.buf += data
        if b"\n" in self.buf[:BUFFER_BYTES]:
            line, self.buf = self.buf.split(b"\n", 1)
        else:
            line, self.buf = self.buf[:BUFFER_BYTES], self.buf[BUFFER_BYTES:]
        return line.rstrip(b"\r").decode("utf-8", "replace")


good.main(SmallBuffer)
