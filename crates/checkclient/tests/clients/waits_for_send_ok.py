#!/usr/bin/env python3
"""Broken: after a SEND, takes the next line as its answer, so a DELIVERY that comes before the
SEND-OK is lost (fails `delivery-before-send-ok`)."""
import os, queue, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import good


class WaitsForSendOk(good.Client):
    def __init__(self, host, port):
        super().__init__(host, port)
        self.replies = queue.Queue()
        self.waiting = False

    def handle(self, line):
        if self.waiting:
            self.waiting = False
            self.replies.put(line)
        else:
            super().handle(line)

    def send(self, to, text):
        self.waiting = True
        super().send(to, text)
        reply = self.replies.get()
        if reply == "SEND-OK":
            print("(sent)")
        else:
            print("could not send your message")


good.main(WaitsForSendOk)
