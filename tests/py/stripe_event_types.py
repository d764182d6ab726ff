"""The event types the official `stripe` Python package lets a webhook
endpoint subscribe to (`enabled_events` of WebhookEndpointCreateParams),
for the test that holds `src/stripe/event_types.rs` to them
(tests/it/webhook_endpoints.rs). Prints a JSON list, in the package's
order, without `*`.
"""

import json
import typing

from stripe.params import WebhookEndpointCreateParams

# Only this field's annotation is evaluated: others name types the module
# imports for type checkers alone.
hint = WebhookEndpointCreateParams.__annotations__["enabled_events"]
(literal,) = typing.get_args(hint)
print(json.dumps([name for name in typing.get_args(literal) if name != "*"]))
