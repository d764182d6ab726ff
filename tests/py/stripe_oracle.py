"""Independent oracle for webhook signatures: the official `stripe` package.

Reads a JSON list of {"payload", "header", "secret"} cases on stdin and
prints a JSON list of booleans: whether stripe.Webhook.construct_event
accepts each one with the default 300 s tolerance.
"""
import json
import sys

import stripe

cases = json.load(sys.stdin)
verdicts = []
for case in cases:
    try:
        stripe.Webhook.construct_event(case["payload"], case["header"], case["secret"])
        verdicts.append(True)
    except (stripe.SignatureVerificationError, ValueError):
        verdicts.append(False)
json.dump(verdicts, sys.stdout)
