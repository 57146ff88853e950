#!/usr/bin/env python3
"""Runs a command on a terminal of its own and types at it, as a person at a keyboard would.

Usage: type_at_terminal.py PROMPT COMMAND [ARG...] < KEYS

Waits until the command has written PROMPT, then types the bytes read from standard input,
then waits for the command to end (20 s at most). Writes what the command wrote to the
terminal to standard output and exits with the command's status (124 on timeout).

The keys may come in pieces separated by NUL bytes. Each piece after the first is typed once
the command has read every byte typed before (a signal key such as ^Z makes the terminal drop
what is still unread), and once the prompt has been shown once more than the pieces before
held ^Z (a prompt shows itself again after a stop).
"""
import array
import fcntl
import os
import select
import signal
import sys
import termios
import time


def unread(fd):
    """Bytes typed at the terminal that the command has not read yet."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def main():
    prompt = sys.argv[1].encode()
    argv = sys.argv[2:]
    pieces = sys.stdin.buffer.read().split(b"\0")
    leader, follower = os.openpty()
    pid = os.fork()
    if pid == 0:
        os.close(leader)
        os.setsid()
        fcntl.ioctl(follower, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(follower, fd)
        os.close(follower)
        os.execv(argv[0], argv)
    deadline = time.monotonic() + 20
    shown = b""
    typed = 0  # pieces typed
    stops = 0  # ^Z typed
    status = None
    while status is None and time.monotonic() < deadline:
        if (typed < len(pieces) and shown.count(prompt) > stops
                and (typed == 0 or unread(follower) == 0)):
            os.write(leader, pieces[typed])  # blocks while the terminal's buffer is full
            stops += pieces[typed].count(b"\x1a")
            typed += 1
        ready, _, _ = select.select([leader], [], [], 0.05)
        if ready:
            shown += os.read(leader, 4096)
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.stdout.buffer.write(shown)
        sys.exit(124)
    while select.select([leader], [], [], 0.05)[0]:  # what it wrote last
        chunk = os.read(leader, 4096)
        if not chunk:
            break
        shown += chunk
    sys.stdout.buffer.write(shown)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
