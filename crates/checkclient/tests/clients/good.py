#!/usr/bin/env python3
"""A correct chat client in the style of the course's: the reference the broken ones start from.

Usage: good.py HOST PORT. Reads the name from the first input line, then `@user message`,
`!who` and `!quit`. One thread reads the socket and handles every line as it comes; the main
thread reads the keyboard. Each broken client beside this file changes one method, to have
exactly one defect that `tcpchat check-client` must find.
"""

import os
import socket
import sys
import threading


class Client:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, int(port)))
        self.buf = b""

    # -- the wire ---------------------------------------------------------------------------
    def read_line(self):
        """The next line without its newline, or None once the server has closed."""
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def send_line(self, text):
        self.sock.sendall(text.encode("utf-8") + b"\n")

    # -- what the server says ---------------------------------------------------------------
    def handle(self, line):
        word, _, rest = line.partition(" ")
        if word == "DELIVERY":
            sender, _, text = rest.partition(" ")
            print(f"{sender}: {text}")
        elif word == "SEND-OK":
            print("(sent)")
        elif word == "BAD-DEST-USER":
            print("that user is not online")
        elif word == "LIST-OK":
            print("online: " + ", ".join(rest.split(",")))
        else:
            self.unknown(line)

    def unknown(self, line):
        pass

    def closed(self):
        print("the server closed the connection")
        os._exit(0)

    def reader(self):
        while True:
            line = self.read_line()
            if line is None:
                self.closed()
                return
            self.handle(line)

    # -- what the user types ----------------------------------------------------------------
    def message(self, text):
        return text

    def send(self, to, text):
        self.send_line(f"SEND {to} {self.message(text)}")

    def login(self):
        print("your name?")
        while True:
            name = sys.stdin.readline().strip()
            self.send_line(f"HELLO-FROM {name}")
            reply = self.read_line()
            if reply is None:
                print("the server closed the connection")
                sys.exit(1)
            if reply.startswith("HELLO "):
                print(f"welcome, {name}!")
                return
            if reply == "IN-USE":
                print("that name is taken; another one?")
            elif reply == "BUSY":
                print("the server is full, try later")
                sys.exit(1)
            else:
                print(f"cannot log in: {reply}; another name?")

    def run(self):
        self.login()
        threading.Thread(target=self.reader, daemon=True).start()
        for line in sys.stdin:
            line = line.rstrip("\n")
            if line == "!quit":
                # Shut down rather than close: the reading thread is blocked in recv() on
                # this socket, and closing it under that thread makes it raise.
                self.sock.shutdown(socket.SHUT_RDWR)
                os._exit(0)
            if line == "!who":
                self.send_line("LIST")
            elif line.startswith("@") and " " in line:
                to, _, text = line[1:].partition(" ")
                self.send(to, text)


def main(cls=Client):
    cls(sys.argv[1], sys.argv[2]).run()


if __name__ == "__main__":
    main()
