#!/usr/bin/env python3
"""Runs a command on a terminal of its own and types at it, as a person at a keyboard would.

Usage: type_at_terminal.py PROMPT COMMAND [ARG...] < KEYS

Waits until the command has written PROMPT, then types the bytes read from standard input,
then waits for the command to end (20 s at most). Writes what the command wrote to the
terminal to standard output and exits with the command's status (124 on timeout).
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
    keys = sys.stdin.buffer.read()
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    deadline = time.monotonic() + 20
    shown = b""
    typed = False
    while time.monotonic() < deadline:
        if not typed and prompt in shown:
            os.write(fd, keys)  # blocks while the terminal's input buffer is full
            typed = True
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
