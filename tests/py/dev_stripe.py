"""scripts/dev's Stripe: localstripe, with what it lacks for the tour.

localstripe has no checkout sessions, so a paid session posted with
`scripts/send-test-event --type checkout.session.completed` would find no
line items when stripe-inbound reads them. This proxy answers
`GET /v1/checkout/sessions/{id}/line_items` with one line item built from
Stripe's example item (the session's amount, product `prod_dev_tour`) and
passes every other request on to localstripe unchanged. For local use
only; the tests use their own fixture-backed fake.

    python dev_stripe.py --port 8421 --upstream http://127.0.0.1:8420
"""
import argparse
import http.server
import json
import pathlib
import re
import time
import urllib.error
import urllib.request

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "stripe" / "fixtures3.json"
LINE_ITEMS = re.compile(r"^/v1/checkout/sessions/(cs_[A-Za-z0-9_]+)/line_items$")
# The amount send-test-event gives its sessions.
AMOUNT = 2500


def line_items(session_id):
    item = json.loads(FIXTURES.read_text())["resources"]["item"]
    item.update(id="li_" + session_id[3:], description="Tour item", quantity=1,
                amount_subtotal=AMOUNT, amount_total=AMOUNT, currency="usd")
    item["price"].update(id="price_dev_tour", product="prod_dev_tour", unit_amount=AMOUNT,
                         currency="usd", type="one_time", recurring=None, created=int(time.time()))
    return {"object": "list", "data": [item], "has_more": False,
            "url": f"/v1/checkout/sessions/{session_id}/line_items"}


class Proxy(http.server.BaseHTTPRequestHandler):
    upstream = ""

    def _send(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request = urllib.request.Request(self.upstream + self.path, data=body, method=self.command)
        for name, value in self.headers.items():
            if name.lower() not in ("host", "content-length", "connection"):
                request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                self._send(answer.status, answer.read(), answer.headers.get("Content-Type", "application/json"))
        except urllib.error.HTTPError as refused:
            self._send(refused.code, refused.read(), refused.headers.get("Content-Type", "application/json"))

    def do_GET(self):
        found = LINE_ITEMS.match(self.path.split("?", 1)[0])
        if found:
            self._send(200, json.dumps(line_items(found.group(1))).encode())
        else:
            self._forward()

    do_POST = do_DELETE = _forward

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    Proxy.upstream = args.upstream.rstrip("/")
    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Proxy).serve_forever()
