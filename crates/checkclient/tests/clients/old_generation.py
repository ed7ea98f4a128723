#!/usr/bin/env python3
"""A correct client of the previous protocol generation (WHO / WHO-OK / UNKNOWN, the
2014-2021 course material): passes `check-client --generation old`."""
import os, socket, sys, threading
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import good


class OldGeneration(good.Client):
    def handle(self, line):
        word, _, rest = line.partition(" ")
        if word == "WHO-OK":
            print("online: " + ", ".join(rest.split(",")))
        elif word == "UNKNOWN":
            print("that user is not online")
        else:
            super().handle(line)

    def run(self):
        self.login()
        threading.Thread(target=self.reader, daemon=True).start()
        for line in sys.stdin:
            line = line.rstrip("\n")
            if line == "!quit":
                self.sock.shutdown(socket.SHUT_RDWR)
                os._exit(0)
            if line == "!who":
                self.send_line("WHO")
            elif line.startswith("@") and " " in line:
                to, _, text = line[1:].partition(" ")
                self.send(to, text)


good.main(OldGeneration)
