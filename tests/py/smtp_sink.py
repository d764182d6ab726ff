"""A real SMTP server (aiosmtpd) that keeps every message it accepts.

    smtp_sink.py --port PORT --dir DIR [--user USER --password PASSWORD]

Each accepted message is written to DIR/<n>.eml as received, and beside it
DIR/<n>.json as Python's own `email` package reads it (envelope, headers,
plain text and HTML parts decoded, and the time it was accepted as
`received_at`), so the tests read the MIME the way a
mail client does. Both are written to a temporary name first, then renamed,
the JSON last, so a reader that finds the JSON finds a whole message. A
recipient listed in DIR/refuse (one address per line) is refused with a
permanent `550`, as a server refuses an unknown mailbox; removing the line
fixes the cause. With --user and --password the server requires SMTP AUTH
(PLAIN or LOGIN, allowed without TLS here) and refuses other credentials
with `535`. The tests and `scripts/dev` read the files.

A server can also be slow: DIR/stall-rcpt or DIR/stall-data (JSON
`{"seconds": S, "answer": "554 ..." or null}`) holds the next RCPT or DATA
answer, of whichever client comes first, for S seconds, then gives
`answer` or the usual one; the file is consumed, so one command is held.
With `"seconds": null` the answer is held until DIR/release-<phase> is
created (the sink removes it), so a test decides when, whatever the load.
While it holds it, DIR/stalled-<phase> exists. A DATA held and then
accepted keeps the message before the wait, as a server that has the whole
message queues it whatever the client does next (RFC 1047): a client that
gives up waiting may well have delivered it.
"""
import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def only(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        # handled=False: aiosmtpd answers the refusal (535) itself.
        return AuthResult(success=ok, handled=False)

    return authenticate


class Keep:
    def __init__(self, directory):
        self.directory = directory
        existing = [int(n.split(".")[0]) for n in os.listdir(directory) if n.endswith(".eml")]
        self.numbers = itertools.count(max(existing, default=0) + 1)

    def listed(self, name):
        try:
            with open(os.path.join(self.directory, name)) as f:
                return {line.strip().lower() for line in f if line.strip()}
        except FileNotFoundError:
            return set()

    def take_stall(self, phase):
        path = os.path.join(self.directory, "stall-" + phase)
        try:
            with open(path) as f:
                stall = json.load(f)
        except FileNotFoundError:
            return None
        # One event loop serves every client: no other can take it between.
        os.remove(path)
        return stall

    async def hold(self, phase, stall):
        marker = os.path.join(self.directory, "stalled-" + phase)
        self.write("stalled-" + phase, b"")
        try:
            if stall.get("seconds") is None:
                release = os.path.join(self.directory, "release-" + phase)
                while not os.path.exists(release):
                    await asyncio.sleep(0.05)
                os.remove(release)
            else:
                await asyncio.sleep(stall["seconds"])
        finally:
            os.remove(marker)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        stall = self.take_stall("rcpt")
        if stall:
            await self.hold("rcpt", stall)
            if stall.get("answer"):
                return stall["answer"]
        if address.lower() in self.listed("refuse"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if address.lower() in self.listed("defer"):
            return "451 4.7.1 <%s>: greylisted, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def write(self, name, data):
        final = os.path.join(self.directory, name)
        with open(final + ".tmp", "wb") as f:
            f.write(data)
        os.replace(final + ".tmp", final)

    async def handle_DATA(self, server, session, envelope):
        stall = self.take_stall("data")
        if stall and stall.get("answer"):
            await self.hold("data", stall)
            return stall["answer"]
        self.keep(envelope)
        if stall:
            await self.hold("data", stall)
        return "250 Message accepted for delivery"

    def keep(self, envelope):
        n = next(self.numbers)
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        read = {
            "received_at": time.time(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": {k.lower(): str(v) for k, v in message.items()},
            "text": text.get_content() if text else None,
            "html": html.get_content() if html else None,
        }
        self.write("%06d.eml" % n, raw)
        self.write("%06d.json" % n, json.dumps(read).encode())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    auth = {}
    if args.user:
        auth = dict(authenticator=only(args.user, args.password), auth_required=True, auth_require_tls=False)
    controller = Controller(Keep(args.dir), hostname="127.0.0.1", port=args.port, **auth)
    controller.start()
    print("smtp sink on 127.0.0.1:%d, messages in %s" % (args.port, args.dir), flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
