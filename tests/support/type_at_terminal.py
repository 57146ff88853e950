#!/usr/bin/env python3
"""Runs a command on a terminal of its own and types at it, as a person at a keyboard would.

Usage: type_at_terminal.py PROMPT COMMAND [ARG...] < KEYS

Waits until the command has written PROMPT, then types the bytes read from standard input,
then waits for the command to end (20 s at most). Writes what the command wrote to the
terminal to standard output and exits with the command's status (124 on timeout).

The keys may come in pieces separated by NUL bytes. Each piece after the first is typed half
a second after the one before (time for the command to read it: a signal key such as ^Z
flushes what is typed ahead), and once the prompt has been shown once more than the pieces
before held ^Z (a stopped prompt shows itself again when it continues).
"""
import os
import pty
import select
import signal
import sys
import time


def main():
    prompt = sys.argv[1].encode()
    argv = sys.argv[2:]
    pieces = sys.stdin.buffer.read().split(b"\0")
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    deadline = time.monotonic() + 20
    shown = b""
    typed = 0  # pieces typed
    stops = 0  # ^Z typed
    last_typed = 0.0
    while time.monotonic() < deadline:
        if (typed < len(pieces) and shown.count(prompt) > stops
                and time.monotonic() - last_typed >= 0.5):
            os.write(fd, pieces[typed])  # blocks while the terminal's input buffer is full
            stops += pieces[typed].count(b"\x1a")
            typed += 1
            last_typed = time.monotonic()
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every process holding the terminal is gone
            chunk = b""
        if not chunk:
            break
        shown += chunk
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.stdout.buffer.write(shown)
        sys.exit(124)
    _, status = os.waitpid(pid, 0)
    sys.stdout.buffer.write(shown)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
